// API keys: on a first start with none configured, coppiced creates one,
// prints it once and stores only its hash. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, gatewayBin, gatewaySkipReason, removeCgroupParents, removeStateDir, sdkName } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-keys-'));
after(() => {
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});

async function start(port) {
  const env = { ...process.env };
  delete env.COPPICE_API_KEYS;
  const proc = spawn(gatewayBin, ['--listen', `127.0.0.1:${port}`, '--state-dir', stateDir, '--log-level', 'warn', '--network', 'off',
    '--disk-image-size', '512M'],
    { stdio: ['ignore', 'pipe', 'inherit'], env });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  const until = Date.now() + 20000;
  for (;;) {
    try { if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break; } catch {}
    if (Date.now() > until) throw new Error('coppiced did not start');
    await new Promise((r) => setTimeout(r, 25));
  }
  return { proc, out: () => out, stop: () => new Promise((r) => { proc.on('exit', r); proc.kill('SIGTERM'); }) };
}

test(`[${sdkName}] a first start creates a key, prints it once and stores only its hash`, opt, async () => {
  const port = await freePort();
  const g1 = await start(port);
  await new Promise((r) => setTimeout(r, 100));
  const key = /(e2b_[0-9a-f]{40})/.exec(g1.out())?.[1];
  assert.ok(key, `printed: ${g1.out()}`);
  const list = (k) => fetch(`http://127.0.0.1:${port}/v2/sandboxes`, { headers: { 'X-API-KEY': k } });
  assert.equal((await list(key)).status, 200);
  assert.equal((await list(key.slice(0, -1) + (key.endsWith('0') ? '1' : '0'))).status, 401);
  await g1.stop();
  for (const f of fs.readdirSync(stateDir).filter((f) => f.startsWith('coppice.db'))) {
    assert.ok(!fs.readFileSync(path.join(stateDir, f)).includes(key), `${f} holds no plaintext key`);
  }
  const g2 = await start(port);
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(!/e2b_[0-9a-f]{40}/.test(g2.out()), 'not printed again');
  assert.equal((await list(key)).status, 200);
  await g2.stop();
});
