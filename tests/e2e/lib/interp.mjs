// coppice-interp on its own, on the host, for the test files that drive it
// without a gateway: the unmodified @e2b/code-interpreter SDK in debug mode
// with sandboxUrl pointing at the server, and real IPython kernels from the
// host's /usr/bin/python3.
import { spawn, execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDir, freePort, sdkName, sleep, pidsMatching } from './harness.mjs';

export const interpBin = path.join(buildDir, 'coppice-interp');
export const hostPython = '/usr/bin/python3';

// Why coppice-interp tests cannot run here, or null when they can.
// `modules`: the Python modules the file's tests need in the host's python.
export function interpSkipReason(modules) {
  // One code-interpreter SDK version is pinned; the e2b-245 pass would repeat the same run.
  if (sdkName !== 'e2b') return `@e2b/code-interpreter is pinned once; it runs in the COPPICE_SDK=e2b pass`;
  if (!fs.existsSync(interpBin)) return `missing ${interpBin}`;
  try {
    execFileSync(hostPython, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
  } catch {
    return `${hostPython} cannot import ${modules.join(' and ')}`;
  }
  return null;
}

// Starts coppice-interp on a free loopback port with a temp dir of its own
// (its runtime dir; `work` in it is the default context's cwd) and waits
// until the default kernel is ready. `setup(dir)`, if given, runs first and
// returns variables added to the server's environment, which its kernels
// inherit. Returns { url, dir, sbx, stop }: stop() ends the server, checks
// that no kernel outlived it and removes the dir.
export async function startInterp({ setup } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-interp-test-'));
  fs.mkdirSync(path.join(dir, 'work'));
  const env = { ...process.env, ...(setup ? setup(dir) : {}) };
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(interpBin, ['--host', '127.0.0.1', '--port', String(port), '--python', hostPython,
    '--cwd', path.join(dir, 'work'), '--runtime-dir', dir, '--log-level', process.env.COPPICE_LOG_LEVEL || 'warn'],
  { stdio: ['ignore', 'inherit', 'inherit'], env });
  let exited = false;
  proc.on('exit', () => { exited = true; });
  const stop = async () => {
    if (!exited) {
      proc.kill('SIGTERM');
      await new Promise((r) => (exited ? r() : proc.on('exit', r)));
    }
    // Every kernel went with the server (their command lines name this dir).
    for (let i = 0; i < 50 && pidsMatching(dir).length; i++) await sleep(100);
    const left = pidsMatching(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(left, [], 'kernels left running');
  };
  try {
    // The probe mode is what a template's ready_cmd runs.
    execFileSync(interpBin, ['--probe', String(port), '--probe-timeout', '60']);
    const { Sandbox } = await import('@e2b/code-interpreter');
    const sbx = await Sandbox.create({ debug: true, sandboxUrl: url, apiKey: 'e2b_' + '0'.repeat(40) });
    return { url, dir, sbx, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
