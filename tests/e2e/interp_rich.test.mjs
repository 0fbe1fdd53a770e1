// coppice-interp's rich Python results, on the host, through the unmodified
// @e2b/code-interpreter SDK: matplotlib figures as E2B charts (line with a
// date axis, log scale, categorical scale, scatter, bar, pie, box and
// whisker, several axes as a superchart, an unknown figure), a DataFrame as
// `data`, and PIL images shown, displayed or saved as `png`. Skips when the
// host's python3 lacks ipykernel, matplotlib, pandas or PIL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { interpSkipReason, startInterp } from './lib/interp.mjs';

const skip = interpSkipReason(['ipykernel', 'matplotlib', 'pandas', 'PIL']);
const opt = skip ? { skip } : {};

let server, sbx;
before(async () => {
  if (skip) return;
  server = await startInterp();
  ({ sbx } = server);
});
after(async () => { await server?.stop(); });

// Runs `code` and returns its one result's chart (there must be exactly one
// result: the figure, with its PNG beside the chart).
async function chartOf(code) {
  const e = await sbx.runCode(code);
  assert.equal(e.error, undefined, JSON.stringify(e.error));
  assert.equal(e.results.length, 1, `results: ${JSON.stringify(e.results.map((r) => r.formats()))}`);
  assert.ok(e.results[0].png, 'the figure has its PNG too');
  assert.ok(e.results[0].chart, 'no chart');
  return e.results[0].chart;
}

test('line chart with a date axis: labels, units, scales, ticks, points', opt, async () => {
  const c = await chartOf(`
import numpy as np, matplotlib.pyplot as plt, datetime
dates = [datetime.date(2023, 9, 1) + datetime.timedelta(days=i) for i in range(100)]
x = np.linspace(0, 2*np.pi, 100)
plt.figure()
plt.plot(dates, np.sin(x), label='sin(x)')
plt.plot(dates, np.cos(x), label='cos(x)')
plt.xlabel("Time (s)"); plt.ylabel("Amplitude (Hz)"); plt.title('Plot of sin(x) and cos(x)')
plt.show()`);
  assert.equal(c.type, 'line');
  assert.equal(c.title, 'Plot of sin(x) and cos(x)');
  assert.deepEqual([c.x_label, c.y_label, c.x_unit, c.y_unit], ['Time (s)', 'Amplitude (Hz)', 's', 'Hz']);
  assert.deepEqual([c.x_scale, c.y_scale], ['datetime', 'linear']);
  assert.ok(c.x_ticks.length > 0 && c.x_ticks.every((t) => typeof t === 'string' && !isNaN(new Date(t))));
  assert.ok(c.y_ticks.every((t) => typeof t === 'number'));
  assert.ok(c.x_tick_labels.every((t) => typeof t === 'string'));
  assert.deepEqual(c.elements.map((l) => l.label), ['sin(x)', 'cos(x)']);
  assert.equal(c.elements[0].points.length, 100);
  assert.deepEqual(new Date(c.elements[0].points[1][0]), new Date('2023-09-02T00:00:00Z'));
  assert.equal(c.elements[0].points[0][1], 0);
});

test('log and categorical scales', opt, async () => {
  let c = await chartOf(`
import numpy as np, matplotlib.pyplot as plt
x = np.linspace(0, 100, 100)
plt.plot(x, np.exp(x), label='y = e^x'); plt.yscale('log'); plt.ylabel('Y-axis (log scale)'); plt.show()`);
  assert.deepEqual([c.type, c.x_scale, c.y_scale, c.y_unit], ['line', 'linear', 'log', 'log scale']);
  assert.ok(c.y_tick_labels.every((l) => !l.includes('$')), 'mathtext is read as text');
  c = await chartOf(`
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], ['A', 'B', 'C']); plt.show()`);
  assert.deepEqual([c.x_scale, c.y_scale], ['linear', 'categorical']);
});

test('scatter, bar and pie charts', opt, async () => {
  let c = await chartOf(`
import matplotlib.pyplot as plt
plt.xlabel("A"); plt.ylabel("B")
plt.scatter([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], label='Dataset 1')
plt.scatter([1, 2], [1, 2], label='Dataset 2')
plt.show()`);
  assert.deepEqual([c.type, c.title, c.x_label, c.y_label], ['scatter', null, 'A', 'B']);
  assert.deepEqual(c.elements.map((e) => [e.label, e.points.length]), [['Dataset 1', 5], ['Dataset 2', 2]]);
  assert.deepEqual(c.elements[0].points[0], [1, 5]);
  c = await chartOf(`
import matplotlib.pyplot as plt
plt.bar(['Author A', 'Author B', 'Author C'], [100, 200, 300], label='Books Sold')
plt.title('Book Sales'); plt.show()`);
  assert.equal(c.type, 'bar');
  assert.deepEqual(c.elements, [
    { label: 'Author A', group: 'Books Sold', value: 100 },
    { label: 'Author B', group: 'Books Sold', value: 200 },
    { label: 'Author C', group: 'Books Sold', value: 300 },
  ]);
  c = await chartOf(`
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.pie([90, 10], labels=["No", "No, in blue"], autopct='%1.1f%%', startangle=90)
plt.title('Will I wake up early tomorrow?'); plt.show()`);
  assert.equal(c.type, 'pie');
  assert.equal(c.title, 'Will I wake up early tomorrow?');
  assert.deepEqual(c.elements, [{ label: 'No', angle: 324, radius: 1 }, { label: 'No, in blue', angle: 36, radius: 1 }]);
});

test('box and whisker: quartiles, whiskers and outliers per box', opt, async () => {
  const c = await chartOf(`
import matplotlib.pyplot as plt
data = {'Class A': [85, 90, 78, 92, 88], 'Class B': [95, 89, 76, 91, 84, 87], 'Class C': [75, 82, 88, 79, 86]}
fig, ax = plt.subplots()
ax.set_title('Exam Scores'); ax.set_xlabel('Class'); ax.set_ylabel('Score')
ax.boxplot(data.values(), labels=data.keys(), patch_artist=True)
plt.show()`);
  assert.equal(c.type, 'box_and_whisker');
  assert.deepEqual(c.elements.map((b) => b.label), ['Class A', 'Class B', 'Class C']);
  assert.deepEqual(c.elements.map((b) => b.outliers), [[], [76], []]);
  assert.deepEqual(c.elements.map((b) => [b.min, b.first_quartile, b.median, b.third_quartile, b.max]),
    [[78, 85, 88, 90, 92], [84, 84.75, 88, 90.5, 95], [75, 79, 82, 86, 88]]);
});

test('several axes are a superchart; a figure of circles is unknown', opt, async () => {
  let c = await chartOf(`
import matplotlib.pyplot as plt, numpy as np
fig, axs = plt.subplots(1, 2)
fig.suptitle('Multiple Charts Example')
axs[0].plot(np.linspace(0, 10, 100), np.sin(np.linspace(0, 10, 100)), 'r'); axs[0].set_title('Sine Wave')
axs[1].scatter([1, 2, 3], [3, 2, 1], label='Dataset 1'); axs[1].set_xlabel('X'); axs[1].set_title('Scatter Plot')
plt.show()`);
  assert.equal(c.type, 'superchart');
  assert.equal(c.title, 'Multiple Charts Example');
  assert.deepEqual(c.elements.map((e) => [e.type, e.title, e.x_label]), [['line', 'Sine Wave', null], ['scatter', 'Scatter Plot', 'X']]);
  assert.equal(c.elements[0].elements[0].points.length, 100);
  c = await chartOf(`
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.add_artist(plt.Circle((0, 0), 1, fill=False)); plt.title('Two Concentric Circles'); plt.show()`);
  assert.deepEqual([c.type, c.title, c.elements], ['unknown', 'Two Concentric Circles', []]);
});

test('a DataFrame result carries data (NaN as null) beside its text and html', opt, async () => {
  const e = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2, 3], "b": [1.5, float("nan"), 2.5]})');
  const r = e.results[0];
  assert.deepEqual(r.data, { a: [1, 2, 3], b: [1.5, null, 2.5] });
  assert.ok(r.html.includes('<table'));
  assert.ok(r.text.includes('1.5'));
});

test('PIL images: show() and a last expression give a png; save() displays the saved image once', opt, async () => {
  const make = 'import numpy\nfrom PIL import Image\nimage = Image.fromarray((numpy.random.rand(16, 16, 3) * 255).astype("uint8")).convert("RGBA")\n';
  let e = await sbx.runCode(make + 'image.show()\nprint("done")');
  assert.ok(e.results[0]?.png);
  e = await sbx.runCode(make + 'image');
  assert.ok(e.results[0]?.png);
  e = await sbx.runCode(make + 'import tempfile, os\nimage.save(os.path.join(tempfile.mkdtemp(), "test.png"))');
  assert.equal(e.results.length, 1);
  assert.ok(e.results[0].png);
  // matplotlib writes its PNGs through PIL: no extra image for those.
  e = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()');
  assert.equal(e.results.length, 1);
  assert.ok(e.results[0].chart);
});
