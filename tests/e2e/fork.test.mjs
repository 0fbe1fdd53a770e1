// Fork with the real SDK: sbx.fork({count}) checkpoints the sandbox once
// (it runs on, its id, token and end of life untouched) and starts `count`
// children from it in parallel, each with its own id, hostname and envd
// token (the parent's does not open a child), the parent's files as they
// were at the fork, and a writable layer of its own. Bad counts are 400s;
// lineage survives a gateway kill -9; a gateway killed in the middle of a
// fork leaves, after its restart, every child running or gone and nothing
// else (state dirs, cgroups, uid slots). Figures: fork x N time, disk bytes
// per child. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { cgroupParentDirs, processesOf, keptStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, waitFor, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw;
const stateDir = keptStateDir('fork', after, () => gw);

const start = () => startGateway({ stateDir });
const api = (p, init = {}) => fetch(`${gw.url}${p}`, {
  ...init, headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) },
});
const info = async (id) => (await api(`/sandboxes/${id}`)).json();
// envd's /envs of sandbox `id` through the gateway's proxy with `token`.
const envs = (id, token) => fetch(`${gw.url}/envs`, { headers: { 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': token } });
const sandboxDirs = () => fs.readdirSync(path.join(stateDir, 'sandboxes')).filter((n) => !n.startsWith('.'));
const cgroupsLeft = () => cgroupParentDirs(stateDir).flatMap((d) => { try { return fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name); } catch { return []; } });

test(`[${sdkName}] fork x5: own ids and tokens, the parent's files, separate layers, the parent untouched`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw = await start();
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000, envs: { FROM: 'parent' } });
  await parent.files.write('/home/user/before.txt', 'written before the fork');
  const before = await info(parent.sandboxId);

  const t0 = performance.now();
  const kids = await parent.fork({ count: 5, timeoutMs: 120_000 });
  const ms = performance.now() - t0;
  assert.equal(kids.length, 5);
  for (const k of kids) assert.ok(!(k instanceof Error), String(k));
  let bytes = 0;
  console.log(`[figures] fork x5: ${ms.toFixed(1)} ms total, ${(ms / 5).toFixed(1)} ms per child`);

  // The parent: same id, token and end of life, running, its token still works.
  const after = await info(parent.sandboxId);
  assert.equal(after.state, 'running');
  assert.equal(after.endAt, before.endAt);
  assert.equal(after.envdAccessToken, before.envdAccessToken);
  assert.equal((await envs(parent.sandboxId, before.envdAccessToken)).status, 200);
  await parent.files.write('/home/user/after.txt', 'written after the fork');

  const ids = new Set(kids.map((k) => k.sandboxId));
  assert.equal(ids.size, 5);
  assert.ok(!ids.has(parent.sandboxId));
  const tokens = new Set();
  for (const k of kids) {
    const i = await info(k.sandboxId);
    tokens.add(i.envdAccessToken);
    assert.notEqual(i.envdAccessToken, before.envdAccessToken);
    assert.equal((await envs(k.sandboxId, before.envdAccessToken)).status, 401, "the parent's token does not open a child");
    const own = await envs(k.sandboxId, i.envdAccessToken);
    assert.equal(own.status, 200);
    assert.equal((await own.json()).FROM, 'parent', 'the environment is the parent\'s (its envd\'s memory)');
    assert.equal(i.lineage.parentSandboxID, parent.sandboxId);
    assert.equal(await k.files.read('/home/user/before.txt'), 'written before the fork');
    assert.equal(await k.files.exists('/home/user/after.txt'), false);
    assert.equal((await k.commands.run('hostname')).stdout.trim(), k.sandboxId);
  }
  assert.equal(tokens.size, 5);
  await kids[0].files.write('/home/user/before.txt', 'changed in child 0');
  assert.equal(await kids[1].files.read('/home/user/before.txt'), 'written before the fork');
  assert.equal(await parent.files.read('/home/user/before.txt'), 'written before the fork');
  for (const k of kids) {
    const m = await (await api(`/sandboxes/${k.sandboxId}/metrics`)).json();
    bytes += m.at(-1)?.diskUsed ?? 0;
  }
  console.log(`[figures] disk bytes per child (its own layer): ${Math.round(bytes / 5)}`);

  // Bad counts: 400 before any work; a missing sandbox: 404.
  for (const count of [0, 10000, -1]) {
    const r = await api(`/sandboxes/${parent.sandboxId}/fork`, { method: 'POST', body: JSON.stringify({ count }) });
    assert.equal(r.status, 400, `count ${count}`);
    assert.match((await r.json()).message, /count/);
  }
  assert.equal((await api('/sandboxes/aaaaaaaaaaaaaaaaaaaa/fork', { method: 'POST', body: '{"count":1}' })).status, 404);

  // Lineage after a gateway kill -9.
  await gw.kill9();
  gw = await start();
  for (const k of kids) assert.equal((await info(k.sandboxId)).lineage.parentSandboxID, parent.sandboxId);
  for (const k of kids) await Sandbox.kill(k.sandboxId, { ...gw.opts });
  // The fork's layer goes with its last child.
  for (let i = 0; i < 100 && fs.readdirSync(path.join(stateDir, 'sandboxes', '.snapshots')).filter((n) => !n.startsWith('.')).length; i++) await sleep(50);
  assert.deepEqual(fs.readdirSync(path.join(stateDir, 'sandboxes', '.snapshots')).filter((n) => !n.startsWith('.')), []);
  await Sandbox.kill(parent.sandboxId, { ...gw.opts });
});

test(`[${sdkName}] a gateway killed during a fork leaves every child running or gone, nothing half-made`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await parent.files.write('/home/user/f', 'x');
  // A process of its own: the fork goes through a checkpoint.
  await parent.commands.run('sleep 100000', { background: true, timeoutMs: 0 });
  // The fork request in flight; the gateway dies a moment into it.
  const forking = api(`/sandboxes/${parent.sandboxId}/fork`, { method: 'POST', body: JSON.stringify({ count: 4 }) }).catch((e) => e);
  await sleep(700);
  await gw.kill9();
  await forking;
  gw = await start();
  const listed = await (await api('/v2/sandboxes?state=running,paused&limit=1000')).json();
  const alive = listed.map((s) => s.sandboxID).filter((id) => id !== parent.sandboxId);
  for (const id of alive) {
    const kid = await Sandbox.connect(id, { ...gw.opts });
    assert.equal(await kid.files.read('/home/user/f'), 'x', `child ${id} is whole`);
  }
  // Nothing else: state dirs and cgroups are those of listed sandboxes only.
  const known = new Set([parent.sandboxId, ...alive]);
  assert.deepEqual(sandboxDirs().filter((d) => !known.has(d)), []);
  assert.deepEqual(cgroupsLeft().filter((d) => !known.has(d) && !d.startsWith('spare-')), []);
  console.log(`[figures] children alive after a kill -9 mid-fork: ${alive.length} of 4`);
  for (const id of alive) await Sandbox.kill(id, { ...gw.opts });
  await Sandbox.kill(parent.sandboxId, { ...gw.opts });
  // With every sandbox gone, the fork's layer and checkpoint are gone too.
  for (let i = 0; i < 100 && fs.readdirSync(path.join(stateDir, 'sandboxes', '.snapshots')).filter((n) => !n.startsWith('.')).length; i++) await sleep(50);
  assert.deepEqual(fs.readdirSync(path.join(stateDir, 'sandboxes', '.snapshots')).filter((n) => !n.startsWith('.')), []);
});

// A fork of a sandbox running a background process (a tree of more than
// one process): it runs on in every child.
test(`[${sdkName}] fork of a sandbox with a background process carries it into every child`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await parent.commands.run(`python3 -c 'import time\ni = 0\nwhile True:\n    i += 1\n    open("/tmp/count", "w").write(str(i))\n    time.sleep(0.1)'`, { background: true, timeoutMs: 0 });
  // And a shell loop that forks all the time (a child forked after the
  // checkpoint listed the tree's pids must not take the restorer's pid).
  await parent.commands.run('n=0; while :; do n=$((n+1)); echo $n > /tmp/shcount.new; mv /tmp/shcount.new /tmp/shcount; sleep 0.01; done', { background: true, timeoutMs: 0 });
  await sleep(300);
  const kids = await parent.fork({ count: 2, timeoutMs: 60_000 });
  for (const k of kids) {
    assert.ok(!(k instanceof Error), String(k));
    const a = Number(await k.files.read('/tmp/count'));
    await sleep(500);
    assert.ok(Number(await k.files.read('/tmp/count')) > a, 'the counter runs on in the child');
    const b = Number(await k.files.read('/tmp/shcount'));
    await sleep(300);
    assert.ok(Number(await k.files.read('/tmp/shcount')) > b, 'the shell loop runs on in the child');
    await k.kill();
  }
  await parent.kill();
});

// A restored sandbox is idle when its processes are: its init relays envd's
// log without polling an fd that is always ready (it once polled the pipe's
// write end, a CPU each, for ever, slowing every later restore).
test(`[${sdkName}] forked children are idle: no process of theirs spins`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  // A process of its own: the children are restored from a checkpoint.
  await parent.commands.run('sleep 100000', { background: true, timeoutMs: 0 });
  const kids = await parent.fork({ count: 2, timeoutMs: 60_000 });
  const ticks = (pids) => pids.reduce((sum, p) => {
    try {
      const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      return sum + Number(f[11]) + Number(f[12]);  // utime + stime
    } catch { return sum; }
  }, 0);
  try {
    for (const k of kids) assert.ok(!(k instanceof Error), String(k));
    await sleep(200);
    for (const k of kids) {
      const pids = processesOf(k.sandboxId);
      assert.ok(pids.length >= 2, `init and envd of ${k.sandboxId}: ${pids}`);
      const t0 = ticks(pids);
      await sleep(1000);
      const used = ticks(pids) - t0;
      assert.ok(used < 15, `${k.sandboxId}'s processes used ${used} clock ticks in 1 s while idle`);
      assert.equal((await k.commands.run('echo alive')).stdout, 'alive\n');
    }
  } finally {
    for (const k of kids) if (!(k instanceof Error)) await k.kill();
    await parent.kill();
  }
});

// What a fork copies. A sandbox running nothing but its own init and envd
// is all in its files: its children start on a copy of them, with its
// environment and boot id, and no image of its memory is made. One process
// of its user's or a file in its /dev/shm makes the fork a checkpoint of its
// memory; a polling watcher in its envd too, which criu cannot save here (a
// 409 that says so). The gateway counts both kinds of children in
// coppice_fork_children_total{from}.
test(`[${sdkName}] fork of an idle sandbox copies its files alone; a process or /dev/shm makes it a checkpoint, a watcher a 409`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const counts = async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const get = (from) => Number((text.match(new RegExp(`^coppice_fork_children_total\\{from="${from}"\\} (\\S+)$`, 'm')) || [])[1]);
    return { files: get('files'), checkpoint: get('checkpoint') };
  };
  const forkOne = async (parent, expect) => {
    const c0 = await counts();
    const [k] = await parent.fork({ count: 1, timeoutMs: 60_000 });
    assert.ok(!(k instanceof Error), String(k));
    const c1 = await counts();
    assert.deepEqual({ files: c1.files - c0.files, checkpoint: c1.checkpoint - c0.checkpoint },
      expect === 'files' ? { files: 1, checkpoint: 0 } : { files: 0, checkpoint: 1 });
    return k;
  };
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000, envs: { KEPT: 'env' } });
  const bootId = async (s) => (await s.files.read('/proc/sys/kernel/random/boot_id')).trim();
  try {
    await parent.files.write('/home/user/data.txt', 'the parent\'s');
    // Idle: files only, and the children are whole.
    const c0 = await counts();
    const kids = await parent.fork({ count: 2, timeoutMs: 60_000 });
    const c1 = await counts();
    assert.deepEqual({ files: c1.files - c0.files, checkpoint: c1.checkpoint - c0.checkpoint }, { files: 2, checkpoint: 0 });
    for (const k of kids) {
      assert.ok(!(k instanceof Error), String(k));
      assert.equal(await k.files.read('/home/user/data.txt'), 'the parent\'s');
      assert.equal((await k.commands.run('echo $KEPT')).stdout, 'env\n', "the parent's environment");
      assert.equal(await bootId(k), await bootId(parent), "the parent's boot id, as a restore keeps it");
      assert.equal((await k.commands.run('hostname')).stdout.trim(), k.sandboxId);
      assert.equal((await (await api(`/sandboxes/${k.sandboxId}`)).json()).lineage.parentSandboxID, parent.sandboxId);
      await k.kill();
    }

    // A process of its user's: a checkpoint, and the process is in the child.
    const bg = await parent.commands.run('sleep 100000', { background: true, timeoutMs: 0 });
    const withProc = await forkOne(parent, 'checkpoint');
    assert.match((await withProc.commands.run('pgrep -x sleep || true')).stdout, /\d+/);
    await withProc.kill();
    await parent.commands.kill(bg.pid);
    for (let i = 0; i < 100 && (await parent.commands.run('pgrep -x sleep || true')).stdout.trim(); i++) await sleep(50);
    await (await forkOne(parent, 'files')).kill();

    // A file in /dev/shm (memory, not disk): a checkpoint, which carries it.
    await parent.commands.run('echo shm > /dev/shm/held');
    const withShm = await forkOne(parent, 'checkpoint');
    assert.equal((await withShm.commands.run('cat /dev/shm/held')).stdout, 'shm\n');
    await withShm.kill();
    await parent.commands.run('rm /dev/shm/held');

    // A polling watcher in envd: no fork by files alone. criu cannot save
    // an inotify watch on the overlay, so the fork is a 409 that says why,
    // and makes no child. Removed, the fork is by files again.
    const info = await (await api(`/sandboxes/${parent.sandboxId}`)).json();
    const rpc = (method, body) => fetch(`${gw.url}/filesystem.Filesystem/${method}`, {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'E2b-Sandbox-Id': parent.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': info.envdAccessToken,
        'content-type': 'application/json', 'connect-protocol-version': '1' },
    });
    const made = await rpc('CreateWatcher', { path: '/home/user' });
    assert.equal(made.status, 200, await made.clone().text());
    const { watcherId } = await made.json();
    const w0 = await counts();
    const refused = await api(`/sandboxes/${parent.sandboxId}/fork`, { method: 'POST', body: JSON.stringify({ count: 1 }) });
    assert.equal(refused.status, 409, await refused.clone().text());
    assert.match((await refused.json()).message, /watch/);
    assert.deepEqual(await counts(), w0, 'no child was made');
    assert.equal((await rpc('RemoveWatcher', { watcherId })).status, 200);
    await (await forkOne(parent, 'files')).kill();
  } finally {
    await parent.kill();
  }
});


test(`[${sdkName}] fork onto a warm pool's spares: the parent's changes merged into each, the rest made afresh`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const pgw = await startGateway({ extraArgs: ['--pool', 'base=3'] });
  const papi = (p, init = {}) => fetch(`${pgw.url}${p}`, {
    ...init, headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) },
  });
  const pool = async () => (await (await papi('/pools')).json()).find((p) => p.template === 'base');
  const counts = async () => {
    const text = await (await fetch(`${pgw.url}/metrics`)).text();
    const get = (from) => Number((text.match(new RegExp(`^coppice_fork_children_total\\{from="${from}"\\} (\\S+)$`, 'm')) || [])[1]);
    return { spare: get('spare'), files: get('files'), checkpoint: get('checkpoint') };
  };
  const full = () => waitFor('a full pool', async () => (await pool())?.available === 3, 30_000);
  const bootId = async (s) => (await s.files.read('/proc/sys/kernel/random/boot_id')).trim();
  try {
    await full();
    const parent = await Sandbox.create({ ...pgw.opts, timeoutMs: 600_000, envs: { FROM: 'parent' } });
    // Every way a sandbox changes its files: new, changed, deleted (a
    // whiteout), a directory replaced (opaque), a file turned directory, a
    // symlink, owners and modes.
    const root = { user: 'root' };
    await parent.files.write('/home/user/data.txt', "the parent's");
    for (const cmd of ['echo changed > /etc/hostname.old', 'rm /etc/debian_version', 'rm -rf /etc/apt && mkdir /etc/apt && echo only > /etc/apt/only',
      'rm -f /etc/issue.net && mkdir /etc/issue.net', 'ln -s /home/user/data.txt /home/user/link', 'chmod 0600 /home/user/data.txt',
      'chown 1234:1234 /etc/apt/only']) {
      assert.equal((await parent.commands.run(cmd, root)).exitCode, 0, cmd);
    }
    const view = 'cat /home/user/data.txt /etc/hostname.old /etc/apt/only; ls /etc/apt; stat -c "%a %u %F" /home/user/data.txt /etc/apt/only /etc/issue.net /home/user/link;' +
      ' readlink /home/user/link; test -e /etc/debian_version && echo still there || echo gone';
    const want = (await parent.commands.run(view, root)).stdout;
    await full();

    const c0 = await counts();
    const kids = await parent.fork({ count: 4, timeoutMs: 120_000 });
    const c1 = await counts();
    for (const k of kids) assert.ok(!(k instanceof Error), String(k));
    assert.deepEqual({ spare: c1.spare - c0.spare, files: c1.files - c0.files, checkpoint: c1.checkpoint - c0.checkpoint },
      { spare: 3, files: 1, checkpoint: 0 }, 'three children on the three spares, the fourth made afresh');
    assert.equal(new Set(kids.map((k) => k.sandboxId)).size, 4);
    for (const k of kids) {
      assert.equal((await k.commands.run(view, root)).stdout, want, `child ${k.sandboxId} sees the parent's files`);
      assert.equal((await k.commands.run('echo $FROM')).stdout, 'parent\n', "the parent's environment");
      assert.equal(await bootId(k), await bootId(parent), "the parent's boot id");
      assert.equal((await k.commands.run('hostname')).stdout.trim(), k.sandboxId);
      assert.equal((await (await papi(`/sandboxes/${k.sandboxId}`)).json()).lineage.parentSandboxID, parent.sandboxId);
    }
    // Each child's layer is its own; the parent's is untouched.
    await kids[0].files.write('/home/user/data.txt', 'changed in child 0');
    assert.equal(await kids[1].files.read('/home/user/data.txt'), "the parent's");
    assert.equal(await parent.files.read('/home/user/data.txt'), "the parent's");
    await full();  // the pool refills

    // A layer with more than the spares take (256 entries): every child afresh.
    assert.equal((await parent.commands.run('mkdir -p /home/user/many && cd /home/user/many && for i in $(seq 300); do : > f$i; done')).exitCode, 0);
    const m0 = await counts();
    const [big] = await parent.fork({ count: 1, timeoutMs: 60_000 });
    assert.ok(!(big instanceof Error), String(big));
    const m1 = await counts();
    assert.deepEqual({ spare: m1.spare - m0.spare, files: m1.files - m0.files }, { spare: 0, files: 1 });
    assert.equal((await big.commands.run('ls /home/user/many | wc -l')).stdout.trim(), '300');
    for (const k of [...kids, big]) await k.kill();
    await parent.kill();
  } finally {
    await pgw.stop();
  }
});
