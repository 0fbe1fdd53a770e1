// coppice-interp and ipykernel's abort-after-error behaviour. When a request
// sent with stop_on_error ends in an error (the KeyboardInterrupt that ends a
// timed-out run included), ipykernel answers "aborted" to every
// execute_request that reaches it until its stop_on_error_timeout has passed
// (0 s in ipykernel 6, 0.1 s in 5: a race either way). The run after a
// failed or timed-out one, and the silent run restoring a run's envs, are
// sent within milliseconds, so they must not be exposed to that window.
//
// The kernels here get a 0.5 s window through their IPython profile
// (IPYTHONDIR), which turns the race into a certainty: every exposed request
// is aborted. The unmodified @e2b/code-interpreter SDK drives coppice-interp
// alone on the host; no root needed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { sleep } from './lib/harness.mjs';
import { interpSkipReason, startInterp } from './lib/interp.mjs';

const ABORT_WINDOW_S = 0.5;
const skip = interpSkipReason(['ipykernel']);
const opt = skip ? { skip } : {};

let server, sbx;
before(async () => {
  if (skip) return;
  server = await startInterp({
    setup: (dir) => {
      const profile = path.join(dir, 'ipython', 'profile_default');
      fs.mkdirSync(profile, { recursive: true });
      fs.writeFileSync(path.join(profile, 'ipython_kernel_config.py'), `c.Kernel.stop_on_error_timeout = ${ABORT_WINDOW_S}\n`);
      return { IPYTHONDIR: path.join(dir, 'ipython') };
    },
  });
  ({ sbx } = server);
});

after(async () => { await server?.stop(); });

// Each test starts outside any abort window an earlier test may have opened.
const settle = () => sleep(ABORT_WINDOW_S * 1000 + 200);

test('the kernels abort for the configured window (what the other tests rely on)', opt, async () => {
  const exec = await sbx.runCode('get_ipython().kernel.stop_on_error_timeout');
  assert.equal(exec.text, String(ABORT_WINDOW_S));
});

test('the run right after a failed run is not aborted', opt, async () => {
  await settle();
  for (let i = 0; i < 5; i++) {
    const bad = await sbx.runCode('raise ValueError("first")');
    assert.equal(bad.error?.name, 'ValueError');
    const next = await sbx.runCode(`${i} + 40`);
    assert.equal(next.error?.name, undefined, `round ${i}: ${next.error?.name}: ${next.error?.value}`);
    assert.equal(next.text, String(i + 40));
  }
});

test('a run queued behind a failing run is not aborted', opt, async () => {
  await settle();
  const first = sbx.runCode('import time\ntime.sleep(0.3)\nraise KeyError("queued")');
  await sleep(50);
  const second = sbx.runCode('"second ran"');
  const [a, b] = await Promise.all([first, second]);
  assert.equal(a.error?.name, 'KeyError');
  assert.equal(b.error?.name, undefined, `${b.error?.name}: ${b.error?.value}`);
  assert.equal(b.text, 'second ran');
});

test('after a timed-out run the next run is never aborted and the timed-out run\'s envs are restored (30 rounds)', opt, async () => {
  await settle();
  await sbx.runCode('import os; os.environ.pop("ONLY_IN_TIMED_OUT_RUN", None)');
  const bad = [];
  for (let i = 0; i < 30; i++) {
    const envs = i % 2 ? { ONLY_IN_TIMED_OUT_RUN: 'leaked' } : undefined;
    const first = await sbx.runCode('import time\nwhile True:\n    time.sleep(0.01)', { timeoutMs: 300, envs })
      .then((exec) => exec, (e) => e);
    if (first?.name !== 'TimeoutError') {
      bad.push({ round: i, timedOutRunEnded: first?.error ? `${first.error.name}: ${first.error.value}` : String(first) });
    }
    const exec = await sbx.runCode(`import os; print(os.environ.get("ONLY_IN_TIMED_OUT_RUN")); ${i} * 2`);
    if (exec.error || exec.text !== String(i * 2) || exec.logs.stdout.join('') !== 'None\n') {
      bad.push({ round: i, error: exec.error && `${exec.error.name}: ${exec.error.value}`, text: exec.text, stdout: exec.logs.stdout });
    }
  }
  assert.deepEqual(bad, []);
});
