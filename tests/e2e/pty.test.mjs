// sbx.pty.*: create, input, resize, kill.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEnvd, debugSandbox, sleep, sdkName } from './lib/harness.mjs';

let envd, sbx;
before(async () => { envd = await startEnvd(); sbx = await debugSandbox(); });
after(async () => { await envd?.stop(); });

const enc = (s) => new TextEncoder().encode(s);

async function until(pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

test(`[${sdkName}] pty: a login shell with the asked size, input and resize`, async () => {
  let out = '';
  const pty = await sbx.pty.create({ cols: 91, rows: 17, onData: (d) => { out += Buffer.from(d).toString(); } });
  assert.ok(pty.pid > 0);
  await sbx.pty.sendInput(pty.pid, enc('stty size; echo TERM=$TERM\n'));
  await until(() => out.includes('17 91') && out.includes('TERM=xterm'));
  await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 });
  await sbx.pty.sendInput(pty.pid, enc('stty size\n'));
  await until(() => out.includes('40 120'));
  await sbx.pty.sendInput(pty.pid, enc('exit 0\n'));
  const r = await pty.wait();
  assert.equal(r.exitCode, 0);
});

test('pty: kill ends it', async () => {
  const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} });
  assert.equal(await sbx.pty.kill(pty.pid), true);
  await assert.rejects(pty.wait(), (err) => err.exitCode === -1);
});

test('pty: connect re-attaches and sees new output', async () => {
  const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} });
  await pty.disconnect();
  let out = '';
  const again = await sbx.pty.connect(pty.pid, { onData: (d) => { out += Buffer.from(d).toString(); } });
  await sbx.pty.sendInput(pty.pid, enc('echo reattached-$((40+2))\n'));
  await until(() => out.includes('reattached-42'));
  await sbx.pty.kill(pty.pid);
  await again.wait().catch(() => {});
});
