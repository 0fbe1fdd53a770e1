// Every envd area of the SDK, through the gateway's one port against a real
// namespace sandbox (the envd suites run the same calls against a bare envd).
// Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, pidsMatching } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, sbx, Sandbox;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  ({ Sandbox } = await loadSdk());
  sbx = await Sandbox.create({ ...gw.opts });
});
after(async () => { await gw?.stop(); });

const enc = (s) => new TextEncoder().encode(s);
async function until(pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(25);
  }
}

test(`[${sdkName}] commands: output, exit codes, envs, cwd, user`, opt, async () => {
  const r = await sbx.commands.run('echo out; echo err >&2');
  assert.deepEqual([r.stdout, r.stderr, r.exitCode], ['out\n', 'err\n', 0]);
  await assert.rejects(sbx.commands.run('exit 7'), (e) => e.constructor.name === 'CommandExitError' && e.exitCode === 7);
  assert.equal((await sbx.commands.run('echo $X', { envs: { X: 'y z' } })).stdout, 'y z\n');
  assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n');
  assert.equal((await sbx.commands.run('id -un; echo $HOME', { user: 'root' })).stdout, 'root\n/root\n');
  assert.equal((await sbx.commands.run('id -un; pwd')).stdout, 'user\n/home/user\n');
});

test('commands: background, list, connect, kill, stdin, timeout', opt, async () => {
  const h = await sbx.commands.run('sleep 0.4; echo late', { background: true, timeoutMs: 0 });
  assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid));
  await h.disconnect();
  const again = await sbx.commands.connect(h.pid);
  assert.equal((await again.wait()).stdout, 'late\n');
  const k = await sbx.commands.run('sleep 60', { background: true });
  assert.equal(await k.kill(), true);
  await assert.rejects(k.wait(), (e) => e.exitCode === -1);
  assert.equal(await sbx.commands.kill(99999), false);
  const c = await sbx.commands.run('cat', { background: true, stdin: true });
  await sbx.commands.sendStdin(c.pid, 'via proxy\n');
  await sbx.commands.closeStdin(c.pid);
  assert.equal((await c.wait()).stdout, 'via proxy\n');
  const marker = `coppice-parity-${Date.now()}`;
  await assert.rejects(sbx.commands.run(`sleep 30 && echo ${marker}`, { timeoutMs: 500 }), (e) => e.constructor.name === 'TimeoutError');
  await sleep(200);
  assert.deepEqual(pidsMatching(marker), []);
});

test('pty: create, input, resize, kill', opt, async () => {
  let out = '';
  const p = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += Buffer.from(d).toString(); } });
  await sbx.pty.sendInput(p.pid, enc('stty size\n'));
  await until(() => out.includes('24 80'));
  await sbx.pty.resize(p.pid, { cols: 132, rows: 43 });
  await sbx.pty.sendInput(p.pid, enc('stty size\n'));
  await until(() => out.includes('43 132'));
  assert.equal(await sbx.pty.kill(p.pid), true);
  await assert.rejects(p.wait());
});

test('files: text, bytes, a 100 MiB binary, several at once, list depth, info, dirs, rename, remove', opt, async () => {
  await sbx.files.write('notes/a.txt', 'alpha');
  assert.equal(await sbx.files.read('/home/user/notes/a.txt'), 'alpha');
  const bytes = crypto.randomBytes(1000);
  await sbx.files.write('notes/b.bin', bytes);
  assert.equal(Buffer.compare(Buffer.from(await sbx.files.read('notes/b.bin', { format: 'bytes' })), bytes), 0);
  const big = crypto.randomBytes(100 << 20);
  await sbx.files.write('/tmp/big.bin', big);
  const back = Buffer.from(await sbx.files.read('/tmp/big.bin', { format: 'bytes' }));
  assert.equal(crypto.createHash('sha256').update(back).digest('hex'), crypto.createHash('sha256').update(big).digest('hex'));
  const many = await sbx.files.write([{ path: 'multi/one', data: '1' }, { path: 'multi/two/deep', data: '2' }]);
  assert.equal(many.length, 2);
  const d1 = await sbx.files.list('multi');
  assert.deepEqual(d1.map((e) => e.name).sort(), ['one', 'two']);
  const d2 = await sbx.files.list('multi', { depth: 2 });
  assert.ok(d2.some((e) => e.name === 'deep'));
  assert.equal(await sbx.files.exists('multi/one'), true);
  assert.equal(await sbx.files.exists('multi/none'), false);
  const info = await sbx.files.getInfo('notes/a.txt');
  assert.equal(info.type, 'file');
  assert.equal(info.size, 5);
  assert.equal(info.owner, 'user');
  assert.equal(await sbx.files.makeDir('newdir'), true);
  assert.equal(await sbx.files.makeDir('newdir'), false);
  const moved = await sbx.files.rename('notes/a.txt', 'notes/c.txt');
  assert.equal(moved.name, 'c.txt');
  await sbx.files.remove('notes');
  await sbx.files.remove('notes');
  await assert.rejects(sbx.files.read('notes/c.txt'), (e) => e.constructor.name === 'FileNotFoundError');
});

test('files: metadata and signed URLs', opt, async () => {
  await sbx.files.write('meta.txt', 'm', { metadata: { owner: 'team-a' } });
  const info = await sbx.files.getInfo('meta.txt');
  assert.equal(info.metadata?.owner, 'team-a');
  if (typeof sbx.uploadUrl === 'function') {
    const up = await sbx.uploadUrl('/home/user/signed.txt', { useSignatureExpiration: 60_000 });
    const form = new FormData();
    form.append('file', new Blob(['signed body']), '/home/user/signed.txt');
    const r = await fetch(up, { method: 'POST', body: form, headers: { 'E2b-Sandbox-Id': sbx.sandboxId } });
    assert.equal(r.status, 200);
    const down = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 60_000 });
    const g = await fetch(down, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId } });
    assert.equal(await g.text(), 'signed body');
    const bad = await fetch(down.replace(/signature=[^&]+/, 'signature=v1_forged'), { headers: { 'E2b-Sandbox-Id': sbx.sandboxId } });
    assert.equal(bad.status, 401);
  }
});

test('watchDir: create, write, remove, rename, recursive', opt, async () => {
  await sbx.files.makeDir('watched/sub');
  const events = [];
  const w = await sbx.files.watchDir('watched', (e) => events.push(`${e.type}:${e.name}`), { recursive: true });
  await sbx.files.write('watched/f.txt', 'x');
  await sbx.commands.run('echo more >> watched/f.txt; mv watched/f.txt watched/g.txt; rm watched/g.txt; echo s > watched/sub/s.txt');
  await until(() => events.some((e) => e.endsWith('sub/s.txt')) && events.some((e) => e.startsWith('remove')));
  await w.stop();
  for (const want of ['create:f.txt', 'write:f.txt', 'rename:f.txt', 'remove:g.txt']) assert.ok(events.includes(want), `${want} in ${events}`);
});

test('auth: envd refuses requests without the sandbox token', opt, async () => {
  const r = await fetch(`${gw.url}/process.Process/List`, { method: 'POST', body: '{}',
    headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sbx.sandboxId } });
  assert.equal(r.status, 401);
  const wrong = await fetch(`${gw.url}/process.Process/List`, { method: 'POST', body: '{}',
    headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sbx.sandboxId, 'X-Access-Token': 'not-the-token' } });
  assert.equal(wrong.status, 401);
  // The SDK holds the right token: its calls go through.
  assert.ok(Array.isArray(await sbx.commands.list()));
});
