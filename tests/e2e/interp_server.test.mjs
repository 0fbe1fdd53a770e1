// coppice-interp on its own, on the host: the unmodified @e2b/code-interpreter
// SDK (debug mode, sandboxUrl pointing at the server) and raw HTTP against a
// real IPython kernel. No root needed; skips when the host's /usr/bin/python3
// has no ipykernel.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { sleep } from './lib/harness.mjs';
import { interpSkipReason, startInterp } from './lib/interp.mjs';

const skip = interpSkipReason(['ipykernel', 'matplotlib']);
const opt = skip ? { skip } : {};

let server, url, dir, sbx;
before(async () => {
  if (skip) return;
  server = await startInterp();
  ({ url, dir, sbx } = server);
});

after(async () => { await server?.stop(); });

async function rawLines(body) {
  const r = await fetch(`${url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, text, lines: r.status === 200 ? text.split('\n').slice(0, -1).map((l) => JSON.parse(l)) : [] };
}

test('GET /health answers "OK"; runCode(1+1) is three NDJSON lines', opt, async () => {
  const h = await fetch(`${url}/health`);
  assert.equal(h.status, 200);
  assert.equal(await h.json(), 'OK');
  const exec = await sbx.runCode('1+1');
  assert.equal(exec.text, '2');
  assert.equal(exec.error, undefined);
  const { status, text, lines } = await rawLines({ code: '1+1' });
  assert.equal(status, 200);
  assert.ok(text.endsWith('\n'));
  assert.deepEqual(lines.map((l) => l.type), ['number_of_executions', 'result', 'end_of_execution']);
  assert.deepEqual(lines[1], { type: 'result', text: '2', is_main_result: true });
});

test('state persists across runs; stdout and stderr reach the callbacks in order', opt, async () => {
  await sbx.runCode('counter = 40');
  await sbx.runCode('counter += 1');
  const out = [], err = [];
  const exec = await sbx.runCode('import sys\nprint("to out")\nprint("to err", file=sys.stderr)\ncounter + 1',
    { onStdout: (m) => out.push(m.line), onStderr: (m) => err.push(m.line) });
  assert.equal(exec.text, '42');
  assert.deepEqual(out, ['to out\n']);
  assert.deepEqual(err, ['to err\n']);
  assert.deepEqual(exec.logs, { stdout: ['to out\n'], stderr: ['to err\n'] });
  assert.ok(exec.executionCount > 1);
});

test('an exception is an error with name, value and traceback', opt, async () => {
  const errors = [];
  const exec = await sbx.runCode('def f():\n    raise ValueError("bad value")\nf()', { onError: (e) => errors.push(e) });
  assert.equal(exec.error.name, 'ValueError');
  assert.equal(exec.error.value, 'bad value');
  assert.match(exec.error.traceback, /ValueError: bad value/);
  assert.match(exec.error.traceback, /f\(\)/);
  assert.doesNotMatch(exec.error.traceback, /\x1b\[/, 'no terminal colours');
  assert.equal(errors.length, 1);
  assert.equal(exec.results.length, 0);
});

test('contexts: create with a cwd, list, isolated state, restart, remove', opt, async () => {
  const cwd = fs.mkdtempSync(path.join(dir, 'ctx-'));
  const ctx = await sbx.createCodeContext({ cwd, language: 'python' });
  assert.match(ctx.id, /^[0-9a-f-]{36}$/);
  assert.equal(ctx.language, 'python');
  assert.equal(ctx.cwd, cwd);
  const list = await sbx.listCodeContexts();
  assert.ok(list.some((c) => c.id === ctx.id && c.cwd === cwd));
  assert.ok(list.some((c) => c.id !== ctx.id && c.language === 'python'), 'the default context is listed');
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, cwd);
  await sbx.runCode('only_here = 7', { context: ctx });
  assert.equal((await sbx.runCode('only_here', { context: ctx })).text, '7');
  assert.equal((await sbx.runCode('only_here')).error?.name, 'NameError');
  await sbx.restartCodeContext(ctx);
  assert.equal((await sbx.runCode('only_here', { context: ctx })).error?.name, 'NameError');
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, cwd);
  await sbx.removeCodeContext(ctx.id);
  assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
  await assert.rejects(sbx.runCode('1', { context: ctx }), (e) => e.name === 'NotFoundError' && e.message.includes(ctx.id));
  await assert.rejects(sbx.removeCodeContext(ctx.id), (e) => e.name === 'NotFoundError');
});

test('envs apply to one run only and restore what was there', opt, async () => {
  await sbx.runCode('import os; os.environ["KEEP"] = "before"; os.environ.pop("ONLY_ONCE", None)');
  const exec = await sbx.runCode('import os; print(os.environ["ONLY_ONCE"], os.environ["KEEP"])',
    { envs: { ONLY_ONCE: 'it\'s "quoted" \\ ü', KEEP: 'during' } });
  assert.deepEqual(exec.logs.stdout, ['it\'s "quoted" \\ ü during\n']);
  const after = await sbx.runCode('import os; print(os.environ.get("ONLY_ONCE"), os.environ["KEEP"])');
  assert.deepEqual(after.logs.stdout, ['None before\n']);
});

test('a matplotlib figure is a png result', opt, async () => {
  const exec = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title("t")\nplt.show()');
  assert.equal(exec.error, undefined, JSON.stringify(exec.error));
  const png = exec.results.find((r) => r.png);
  assert.ok(png, JSON.stringify(exec.results.map((r) => r.formats())));
  assert.equal(png.isMainResult, false);
  assert.equal(Buffer.from(png.png, 'base64').subarray(1, 4).toString(), 'PNG');
  // Rich main results: a DataFrame has text and html.
  const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2]})');
  assert.ok(df.results[0].html.includes('<table'));
  assert.ok(df.text.includes('a'));
});

test('timeoutMs interrupts a long loop and the context stays usable with its state', opt, async () => {
  await sbx.runCode('survivor = "still here"');
  const t0 = performance.now();
  await assert.rejects(sbx.runCode('import time\nwhile True:\n    time.sleep(0.05)', { timeoutMs: 1000 }),
    (e) => e.name === 'TimeoutError');
  assert.ok(performance.now() - t0 < 5000);
  const t1 = performance.now();
  const exec = await sbx.runCode('survivor');
  assert.equal(exec.text, 'still here');
  assert.ok(performance.now() - t1 < 5000, 'the interrupted run did not hold the context');
  // A busy loop in pure Python is interrupted too.
  await assert.rejects(sbx.runCode('while True:\n    pass', { timeoutMs: 800 }), (e) => e.name === 'TimeoutError');
  assert.equal((await sbx.runCode('1+2')).text, '3');
});

test('runs in one context are served in order; a slow run sends keepalives', opt, async () => {
  const first = sbx.runCode('import time\ntime.sleep(0.5)\norder = ["first"]');
  await sleep(50);
  const second = sbx.runCode('order.append("second"); order');
  const [a, b] = await Promise.all([first, second]);
  assert.equal(a.error, undefined);
  assert.equal(b.text, "['first', 'second']");
  const { lines } = await rawLines({ code: 'import time; time.sleep(5.6); print("done")' });
  assert.ok(lines.some((l) => l.type === 'keepalive'), JSON.stringify(lines));
  assert.equal(lines.at(-1).type, 'end_of_execution');
});

test('a kernel that dies ends the run with an error and is replaced', opt, async () => {
  const t0 = performance.now();
  const exec = await sbx.runCode('import os, signal\nos.kill(os.getpid(), signal.SIGKILL)');
  assert.equal(exec.error?.name, 'ContextRestarting');
  assert.ok(performance.now() - t0 < 10000);
  const next = await sbx.runCode('1+1');
  assert.equal(next.text, '2');
});

test('request errors: context and language together, unknown language, unknown context, bad body', opt, async () => {
  let r = await rawLines({ code: '1', context_id: 'x', language: 'python' });
  assert.equal(r.status, 400);
  assert.match(r.text, /Only one of context_id or language/);
  r = await rawLines({ code: '1', language: 'cobol' });
  assert.equal(r.status, 400);
  assert.match(r.text, /python/);
  r = await rawLines({ code: '1', context_id: 'nope' });
  assert.equal(r.status, 404);
  assert.equal(r.text, 'Context nope not found');
  r = await rawLines({ nocode: true });
  assert.equal(r.status, 400);
  assert.equal((await rawLines({ code: '1', language: 'Python' })).lines.at(-1).type, 'end_of_execution');
  const c = await fetch(`${url}/contexts`, { method: 'POST', body: JSON.stringify({ language: 'cobol' }) });
  assert.equal(c.status, 400);
  const d = await fetch(`${url}/contexts`, { method: 'POST', body: JSON.stringify({ cwd: '/no/such/dir' }) });
  assert.equal(d.status, 400);
  assert.equal((await fetch(`${url}/contexts/nope/restart`, { method: 'POST' })).status, 404);
  assert.equal((await fetch(`${url}/nowhere`)).status, 404);
});
