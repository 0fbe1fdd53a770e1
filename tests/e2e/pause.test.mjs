// Pause to disk (files only) with the real SDK: pause({ keepMemory: false })
// ends every process and frees the sandbox's kernel objects, keeps its
// files, environment and token, survives a gateway killed with SIGKILL, and
// a resume cold-boots it; another team's key cannot pause or resume it; a
// paused sandbox can be killed. (Pause with memory: pause_memory.test.mjs.)
// Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processesOf, removeCgroupParents, removeStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-pause-'));
const OTHER_KEY = 'e2b_' + 'beef'.repeat(10);
let gw;
after(async () => {
  await gw?.stop();
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});


const start = () => startGateway({ stateDir, apiKeys: `${TEST_API_KEY},other:${OTHER_KEY}` });

test(`[${sdkName}] pause without memory: no process left, files kept across kill -9 of the gateway, cold boot`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000, envs: { KEPT: 'env' }, metadata: { who: 'me' } });
  await sbx.files.write('/home/user/file.txt', 'kept');
  await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  assert.ok(processesOf(sbx.sandboxId).length >= 3);

  // Another team sees nothing to pause.
  const other = await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}/pause`, { method: 'POST', headers: { 'X-API-KEY': OTHER_KEY, 'content-type': 'application/json' }, body: '{"memory":false}' });
  assert.equal(other.status, 404);

  assert.equal(await sbx.pause({ keepMemory: false }), true);
  assert.equal((await sbx.getInfo()).state, 'paused');
  assert.deepEqual(processesOf(sbx.sandboxId), [], 'no process is left');
  const sbxDir = path.join(stateDir, 'sandboxes', sbx.sandboxId);
  assert.equal(fs.readFileSync(path.join(sbxDir, 'upper/home/user/file.txt'), 'utf8'), 'kept');
  // A second pause of a paused sandbox is a conflict, not a crash.
  const again = await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}/pause`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' }, body: '{"memory":false}' });
  assert.equal(again.status, 409);

  await gw.kill9();
  gw = await start();
  const listed = await Sandbox.list({ ...gw.opts }).nextItems();
  assert.equal(listed.find((s) => s.sandboxId === sbx.sandboxId)?.state, 'paused');
  const resumeOther = await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}/resume`, { method: 'POST', headers: { 'X-API-KEY': OTHER_KEY, 'content-type': 'application/json' }, body: '{}' });
  assert.equal(resumeOther.status, 404);

  const back = await Sandbox.connect(sbx.sandboxId, gw.opts);
  const info = await back.getInfo();
  assert.equal(info.state, 'running');
  assert.deepEqual(info.metadata, { who: 'me' });
  assert.equal(await back.files.read('/home/user/file.txt'), 'kept');
  assert.equal((await back.commands.run('pgrep -x sleep || echo none')).stdout.trim(), 'none', 'a cold boot');
  assert.equal((await back.commands.run('echo $KEPT')).stdout, 'env\n');

  // Cycles lose nothing.
  for (let i = 0; i < 5; i++) {
    await back.files.write('/home/user/file.txt', `kept ${i}`);
    assert.equal(await back.pause({ keepMemory: false }), true);
    const b2 = await Sandbox.connect(sbx.sandboxId, gw.opts);
    assert.equal(await b2.files.read('/home/user/file.txt'), `kept ${i}`);
  }
  await back.kill();
  assert.equal(fs.existsSync(sbxDir), false, 'kill removes its state dir');
});

test(`[${sdkName}] a sandbox paused to disk can be killed; a pause with memory brings its processes back`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const a = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  assert.equal(await a.pause({ keepMemory: false }), true);
  await Sandbox.kill(a.sandboxId, gw.opts);
  assert.equal(fs.existsSync(path.join(stateDir, 'sandboxes', a.sandboxId)), false);
  const listed = await Sandbox.list({ ...gw.opts }).nextItems();
  assert.equal(listed.find((s) => s.sandboxId === a.sandboxId), undefined);

  const b = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await b.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  const sleepPid = (await b.commands.run('pgrep -x sleep')).stdout.trim();
  assert.equal(await b.pause(), true);
  assert.deepEqual(processesOf(b.sandboxId), [], 'written to disk, not frozen');
  const b2 = await Sandbox.connect(b.sandboxId, gw.opts);
  assert.equal((await b2.commands.run('pgrep -x sleep || echo none')).stdout.trim(), sleepPid, 'the same process');
  await b2.kill();
  // A bad memory value is a 400.
  const c = await Sandbox.create({ ...gw.opts });
  const bad = await fetch(`${gw.url}/sandboxes/${c.sandboxId}/pause`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' }, body: '{"memory":"no"}' });
  assert.equal(bad.status, 400);
  await c.kill();
});

// envd's host pid: the sandbox's process whose innermost pid is 2.
function envdPid(id) {
  for (const p of processesOf(id)) {
    const ns = /NSpid:\s+(.*)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1].trim().split(/\s+/);
    if (ns && ns.at(-1) === '2') return Number(p);
  }
  return 0;
}
// envd's connections from outside the sandbox's network namespace (the
// gateway's): sockets of its fd table that its namespace does not list.
function outsideConnections(pid) {
  const local = new Set(fs.readFileSync(`/proc/${pid}/net/unix`, 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)[6]));
  return fs.readdirSync(`/proc/${pid}/fd`).map((f) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${f}`); } catch { return ''; } })
    .filter((l) => l.startsWith('socket:[') && !local.has(l.slice(8, -1))).length;
}

test(`[${sdkName}] envd lets go of the stream of a quiet process once its client has gone`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const pid = envdPid(sbx.sandboxId);
  assert.ok(pid > 0);
  const before = outsideConnections(pid);
  const h = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  assert.ok(outsideConnections(pid) > before, 'the stream holds a connection');
  await h.disconnect();
  let now = outsideConnections(pid);
  for (let i = 0; i < 50 && now > before; i++) {
    await new Promise((r) => setTimeout(r, 20));
    now = outsideConnections(pid);
  }
  assert.ok(now <= before, `envd still holds ${now - before} connection(s) of gone clients`);
  assert.notEqual((await sbx.commands.run('pgrep -x sleep || echo none')).stdout.trim(), 'none', 'the process lives on');
  await sbx.kill();
});

test(`[${sdkName}] a volume stays mounted across a pause to disk`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const r = await fetch(`${gw.url}/volumes`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' }, body: JSON.stringify({ name: `pausevol${process.pid}` }) });
  assert.equal(r.status, 201);
  const vol = await r.json();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000, volumeMounts: { '/data': vol.name } });
  await sbx.commands.run('echo kept > /data/v.txt');
  assert.equal(await sbx.pause({ keepMemory: false }), true);
  const inUse = await fetch(`${gw.url}/volumes/${vol.volumeID}`, { method: 'DELETE', headers: { 'X-API-KEY': TEST_API_KEY } });
  assert.equal(inUse.status, 409, 'a paused sandbox still holds its volume');
  const back = await Sandbox.connect(sbx.sandboxId, gw.opts);
  assert.equal((await back.commands.run('cat /data/v.txt')).stdout, 'kept\n');
  await back.kill();
  const gone = await fetch(`${gw.url}/volumes/${vol.volumeID}`, { method: 'DELETE', headers: { 'X-API-KEY': TEST_API_KEY } });
  assert.ok(gone.ok);
});

test(`[${sdkName}] onTimeout pause without memory: paused (not killed) at its timeout, connect resumes it`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const headers = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
  // autoResume with a files-only pause is refused, saying why.
  const refused = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers, body: JSON.stringify({ templateID: 'base', autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } }) });
  assert.equal(refused.status, 400);
  assert.match((await refused.json()).message, /autoResume/);
  const r = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers,
    body: JSON.stringify({ templateID: 'base', timeout: 2, lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } }) });
  assert.equal(r.status, 201, await r.clone().text());
  const id = (await r.json()).sandboxID;
  // (A connect sets the timeout: the older SDK sends its default unless told.)
  const sbx = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 2_000 });
  await sbx.files.write('/home/user/t.txt', 'kept');
  let state = 'running';
  for (let i = 0; i < 100 && state !== 'paused'; i++) {
    await new Promise((res) => setTimeout(res, 100));
    state = (await (await fetch(`${gw.url}/sandboxes/${id}`, { headers })).json()).state;
  }
  assert.equal(state, 'paused');
  assert.deepEqual(processesOf(id), []);
  const back = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 600_000 });
  assert.equal(await back.files.read('/home/user/t.txt'), 'kept');
  await back.kill();
});

test(`[${sdkName}] --paused-retention: a sandbox paused longer is deleted, a running one stays`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-retention-'));
  const g = await startGateway({ stateDir: dir, extraArgs: ['--paused-retention', '2'] });
  try {
    const paused = await Sandbox.create({ ...g.opts, timeoutMs: 600_000 });
    const running = await Sandbox.create({ ...g.opts, timeoutMs: 600_000 });
    assert.equal(await paused.pause({ keepMemory: false }), true);
    const headers = { 'X-API-KEY': TEST_API_KEY };
    let status = 200;
    for (let i = 0; i < 100 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await fetch(`${g.url}/sandboxes/${paused.sandboxId}`, { headers })).status;
    }
    assert.equal(status, 404, 'deleted after its retention');
    assert.equal(fs.existsSync(path.join(dir, 'sandboxes', paused.sandboxId)), false, 'its state dir is gone');
    assert.equal((await running.getInfo()).state, 'running');
    await running.kill();
  } finally {
    await g.stop();
    removeCgroupParents(dir);
    removeStateDir(dir);
  }
});
