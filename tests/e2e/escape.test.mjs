// What a sandbox can try against the host side, through the real E2B SDK:
// each test is one attempt, and the gateway (or envd) must shrug it off.
//
// Deep trees: a sandbox makes a directory chain ~19,000 levels deep (far past
// PATH_MAX, built with relative mkdir/chdir). Killing the sandbox, and a
// gateway restart that finds such a tree in a dead sandbox's state, must not
// bring the gateway down, and must not hold up other sandboxes; envd must
// survive ListDir with depth and a recursive WatchDir over such a tree.
//
// Files as user: a symlink `user` plants towards /etc/shadow or /root/.bashrc
// must not turn a write or read "as user" into one as the sandbox's root.
//
// The gateway tests need root; the envd test runs without.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startGateway, startEnvd, debugSandbox, gatewaySkipReason, removeCgroupParents, loadSdk, sdkName, sleep, unmountUnder,
} from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const DEPTH = 19000;

// Makes <dir>/deep/d/d/.../d, DEPTH levels, with relative paths only.
const deepScript = (dir) => `
import os
os.chdir(${JSON.stringify(dir)})
os.mkdir('deep')
os.chdir('deep')
for i in range(${DEPTH}):
    os.mkdir('d')
    os.chdir('d')
print('made', ${DEPTH})
`;

async function makeDeepTreeIn(sbx, dir) {
  await sbx.files.write('/tmp/mkdeep.py', deepScript(dir));
  const t0 = Date.now();
  const r = await sbx.commands.run('python3 /tmp/mkdeep.py', { timeoutMs: 120_000 });
  assert.equal(r.stdout.trim(), `made ${DEPTH}`, r.stderr);
  return Date.now() - t0;
}

// rm -rf that copes with any depth (GNU rm walks with directory fds), and
// never leaves the file system it starts on.
function removeAll(dir) {
  try { execFileSync('rm', ['-rf', '--one-file-system', dir]); } catch {}
}

async function healthy(url) {
  try { return (await fetch(`${url}/health`)).ok; } catch { return false; }
}

// Waits until <stateDir>/sandboxes/.trash holds nothing (the reaper's work:
// seconds on a quiet machine, a minute or more when rmdir is slow under load).
async function trashEmptied(stateDir, ms = 300_000) {
  const trash = path.join(stateDir, 'sandboxes', '.trash');
  const end = Date.now() + ms;
  for (;;) {
    let left = [];
    try { left = fs.readdirSync(trash); } catch {}
    if (left.length === 0) return true;
    if (Date.now() > end) return false;
    await sleep(100);
  }
}

// The cgroup dirs (one per hierarchy) of sandbox `id` of the gateway whose
// state is in `stateDir` (see coppiced's main.cc for the parent's name).
function cgroupDirs(stateDir, id) {
  const parent = 'coppice-' + crypto.createHash('sha256').update(fs.realpathSync(stateDir)).digest('hex').slice(0, 12);
  const dirs = [path.join('/sys/fs/cgroup', parent, id)];
  for (const ctrl of fs.readdirSync('/sys/fs/cgroup')) dirs.push(path.join('/sys/fs/cgroup', ctrl, parent, id));
  return dirs.filter((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
}

// SIGKILLs every process of a sandbox through its cgroup, as the OOM killer or
// an operator would while the gateway is down, and waits for them to go.
async function killThroughCgroup(stateDir, id) {
  const [dir] = cgroupDirs(stateDir, id);
  assert.ok(dir, `no cgroup of sandbox ${id}`);
  const pids = () => fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  const end = Date.now() + 10_000;
  for (let left = pids(); left.length > 0; left = pids()) {
    for (const p of left) { try { process.kill(p, 'SIGKILL'); } catch {} }
    assert.ok(Date.now() < end, `sandbox ${id} still has processes ${left}`);
    await sleep(50);
  }
}

// After a test, whatever a gateway that died mid-test left running: the
// sandboxes' processes and cgroups, then the gateway's state dir.
async function cleanUpAfter(stateDir) {
  let real;
  try { real = fs.realpathSync(stateDir); } catch { return; }
  const parent = 'coppice-' + crypto.createHash('sha256').update(real).digest('hex').slice(0, 12);
  const ids = new Set();
  for (const ctrl of ['', ...fs.readdirSync('/sys/fs/cgroup')]) {
    try { for (const id of fs.readdirSync(path.join('/sys/fs/cgroup', ctrl, parent))) ids.add(id); } catch {}
  }
  for (const id of ids) {
    if (!/^[a-z0-9-]+$/.test(id)) continue;
    const dirs = cgroupDirs(stateDir, id);
    if (dirs.length === 0) continue;
    try { await killThroughCgroup(stateDir, id); } catch {}
    for (const d of dirs) { try { fs.rmdirSync(d); } catch {} }
  }
  removeCgroupParents(stateDir);
  unmountUnder(stateDir);
  removeAll(stateDir);
}

test(`[${sdkName}] deep tree: killing the sandbox leaves the gateway up and others unhindered`, opt, async (t) => {
  const { Sandbox } = await loadSdk();
  const gw = await startGateway({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-')) });
  t.after(async () => {
    await gw.stop();
    await cleanUpAfter(gw.stateDir);
  });
  const a = await Sandbox.create({ ...gw.opts });
  const ms = await makeDeepTreeIn(a, '/home/user');
  t.diagnostic(`${DEPTH}-deep tree made in ${ms} ms`);

  // The kill and a second sandbox's whole life, side by side.
  const [, used] = await Promise.all([
    a.kill(),
    (async () => {
      const b = await Sandbox.create({ ...gw.opts });
      const r = await b.commands.run('echo meanwhile');
      await b.kill();
      return r.stdout;
    })(),
  ]);
  assert.equal(used, 'meanwhile\n');
  assert.ok(await healthy(gw.url), 'the gateway answers /health after the kill');
  assert.equal(gw.proc.exitCode, null, 'the gateway is still running');
  const t0 = Date.now();
  assert.ok(await trashEmptied(gw.stateDir), 'the dead sandbox\'s state is removed in the background');
  t.diagnostic(`its state removed in the background within ${Date.now() - t0} ms`);
  assert.ok(await healthy(gw.url), 'the gateway answers /health after the removal');
  // Dot entries are the trash and the spare skeletons, not sandboxes.
  assert.deepEqual(fs.readdirSync(path.join(gw.stateDir, 'sandboxes')).filter((n) => !n.startsWith('.')), []);
});

test(`[${sdkName}] deep tree: a gateway killed with -9 restarts over a dead sandbox's deep tree and serves`, opt, async (t) => {
  const { Sandbox } = await loadSdk();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-'));
  let gw = await startGateway({ stateDir });
  t.after(async () => {
    await gw?.stop();
    await cleanUpAfter(stateDir);
  });
  const a = await Sandbox.create({ ...gw.opts });
  await makeDeepTreeIn(a, '/home/user');
  await gw.kill9();
  await killThroughCgroup(stateDir, a.sandboxId);

  const t0 = Date.now();
  gw = await startGateway({ stateDir });
  t.diagnostic(`restart with recovery took ${Date.now() - t0} ms`);
  assert.ok(await healthy(gw.url));
  const b = await Sandbox.create({ ...gw.opts });
  assert.equal((await b.commands.run('echo served')).stdout, 'served\n');
  assert.equal(await Sandbox.kill(a.sandboxId, gw.opts), false, 'the dead sandbox is gone');
  const t1 = Date.now();
  assert.ok(await trashEmptied(stateDir), 'its state is removed in the background');
  t.diagnostic(`its state removed in the background within ${Date.now() - t1} ms`);
  assert.ok(await healthy(gw.url));
  assert.equal(gw.proc.exitCode, null);
  await b.kill();
});

test(`[${sdkName}] deep tree: envd survives ListDir with depth and a recursive WatchDir over it`, async (t) => {
  const envd = await startEnvd();
  const root = path.join(envd.world.userHome, 'tree');
  t.after(async () => {
    removeAll(root);
    await envd.stop();
  });
  fs.mkdirSync(root);
  execFileSync('/usr/bin/python3', ['-c', deepScript(root)]);
  const deep = path.join(root, 'deep');
  const sbx = await debugSandbox();

  // A bounded depth error (paths past PATH_MAX) or a listing: either is fine,
  // a dead envd is not.
  const listed = await sbx.files.list(deep, { depth: DEPTH + 10 }).catch((e) => e);
  if (listed instanceof Error) t.diagnostic(`ListDir: ${listed.message.slice(0, 200)}`);
  else assert.ok(listed.length > 0);
  assert.ok(await healthy(envd.url), 'envd answers after ListDir');
  assert.equal(envd.proc.exitCode, null);

  const events = [];
  const watch = await sbx.files.watchDir(deep, (e) => events.push(e), { recursive: true }).catch((e) => e);
  if (watch instanceof Error) {
    t.diagnostic(`WatchDir: ${watch.message.slice(0, 200)}`);
  } else {
    fs.writeFileSync(path.join(deep, 'd', 'f'), 'x');
    const end = Date.now() + 3000;
    while (!events.some((e) => e.name === 'd/f') && Date.now() < end) await sleep(20);
    assert.ok(events.some((e) => e.name === 'd/f'), 'the watch sees a write near its top');
    await watch.stop();
  }
  assert.ok(await healthy(envd.url), 'envd answers after WatchDir');
  assert.equal(envd.proc.exitCode, null);

  // Remove (the RPC) copes with the depth as well. rmdir costs up to a few
  // ms on a loaded machine (GNU rm -rf takes a minute for this chain then).
  await sbx.files.remove(deep, { requestTimeoutMs: 600_000 });
  assert.equal(fs.existsSync(deep), false);
  assert.ok(await healthy(envd.url));
});

// The files API as `user` in a real sandbox: envd is the sandbox's root, but
// acts on files with the requesting user's ids, so a symlink `user` plants
// towards a root-only file gets it nowhere.
test(`[${sdkName}] files as user: a planted symlink to /etc/shadow or /root/.bashrc leads nowhere`, opt, async (t) => {
  const { Sandbox, SandboxError, NotFoundError } = await loadSdk();
  const gw = await startGateway({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-escape-')) });
  t.after(async () => {
    await gw.stop();
    await cleanUpAfter(gw.stateDir);
  });
  const sbx = await Sandbox.create({ ...gw.opts });
  t.after(() => sbx.kill().catch(() => {}));
  const SECRET = 'root:$6$secret:19000:0:99999:7:::\n';
  const run = async (cmd, user) => {
    const r = await sbx.commands.run(cmd, { user });
    assert.equal(r.exitCode, 0, r.stderr);
    return r.stdout;
  };
  await run(`printf '%s' '${SECRET}' > /etc/shadow && chmod 600 /etc/shadow && ` +
            `printf '%s' '${SECRET}' > /root/.bashrc && chmod 700 /root`, 'root');
  await run('ln -s /etc/shadow ~/shadow && ln -s /root/.bashrc ~/bashrc', 'user');
  const denied = async (promise) => assert.rejects(promise, (e) => {
    assert.ok(e instanceof SandboxError && !(e instanceof NotFoundError), `${e?.name}: ${e?.message}`);
    assert.match(e.message, /EACCES|permission denied/i);
    return true;
  });
  for (const p of ['shadow', 'bashrc', '/etc/shadow', '/root/.bashrc', '/root/new']) {
    await denied(sbx.files.write(p, 'pwned', { user: 'user' }));
  }
  for (const p of ['shadow', 'bashrc', '/etc/shadow', '/root/.bashrc']) await denied(sbx.files.read(p, { user: 'user' }));
  await denied(sbx.files.list('/root', { user: 'user' }));
  await denied(sbx.files.remove('/etc/shadow', { user: 'user' }));
  assert.equal(await run('cat /etc/shadow /root/.bashrc', 'root'), SECRET + SECRET);
  assert.equal(await run('test -e /root/new || echo absent', 'root'), 'absent\n');
  // Root may, and what user writes in its home is user's.
  assert.equal(await sbx.files.read('/etc/shadow', { user: 'root' }), SECRET);
  await sbx.files.write('/home/user/mine.txt', 'mine', { user: 'user' });
  assert.equal(await run('stat -c %U:%G /home/user/mine.txt', 'root'), 'user:user\n');
  assert.ok(await healthy(gw.url));
});
