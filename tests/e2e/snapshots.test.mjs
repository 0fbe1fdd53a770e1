// Snapshots with the real SDK: Sandbox.createSnapshot keeps a running
// sandbox's files (and, by default, its processes), the source runs on;
// Sandbox.create(snapshotID or name) starts new sandboxes from it, each with
// the snapshot's files over the template and a writable layer of its own;
// listSnapshots filters and pages; deleteSnapshot (DELETE /templates/{id})
// removes it, and its files go once the last sandbox on them is gone;
// another team sees none of it. Figures: snapshot time, create-from-snapshot
// time, disk bytes per snapshot. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { buildDir, removeCgroupParents, removeStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-snap-'));
const OTHER_KEY = 'e2b_' + 'beef'.repeat(10);
let gw;
after(async () => {
  await gw?.stop();
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});

const start = () => startGateway({ stateDir, apiKeys: `${TEST_API_KEY},other:${OTHER_KEY}` });
const api = (p, init = {}, key = TEST_API_KEY) => fetch(`${gw.url}${p}`, {
  ...init, headers: { 'X-API-KEY': key, 'content-type': 'application/json', ...(init.headers || {}) },
});
const snapsDir = () => path.join(stateDir, 'sandboxes', '.snapshots');
const layersOnDisk = () => { try { return fs.readdirSync(snapsDir()).filter((n) => !n.startsWith('.')); } catch { return []; } };

test(`[${sdkName}] snapshot a running sandbox, start three from it, list, page, delete, other team`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw = await start();
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await src.files.write('/home/user/kept.txt', 'from the source');
  await src.commands.run('mkdir -p /opt/app && echo data > /opt/app/state && rm -f /etc/motd && chown user /opt/app', { user: 'root' });

  // Files only first (memory: false is an extension field of the request).
  let t0 = performance.now();
  const filesOnly = await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ name: 'files-only', memory: false }) });
  assert.equal(filesOnly.status, 201, await filesOnly.clone().text());
  const fo = await filesOnly.json();
  console.log(`[figures] snapshot (files only): ${(performance.now() - t0).toFixed(1)} ms, ${fo.diskBytes} bytes`);
  assert.equal(fo.memory, false);

  // With memory, through the SDK.
  t0 = performance.now();
  const snap = await Sandbox.createSnapshot(src.sandboxId, { ...gw.opts, name: 'my-snap' });
  console.log(`[figures] snapshot (files and memory): ${(performance.now() - t0).toFixed(1)} ms`);
  assert.ok(snap.snapshotId);
  assert.deepEqual(snap.names, ['default/my-snap:default']);

  // The source runs on, untouched, and its later writes are not in the snapshot.
  assert.equal((await src.getInfo()).state, 'running');
  await src.files.write('/home/user/after.txt', 'later');

  // Three sandboxes from each, by id and by name.
  for (const ref of [fo.snapshotID, 'my-snap', snap.snapshotId]) {
    const kids = [];
    for (let i = 0; i < (ref === 'my-snap' ? 1 : 3); i++) {
      t0 = performance.now();
      const kid = await Sandbox.create(ref, { ...gw.opts, timeoutMs: 120_000 });
      console.log(`[figures] create from snapshot ${ref === fo.snapshotID ? '(files only)' : '(memory)'}: ${(performance.now() - t0).toFixed(1)} ms`);
      kids.push(kid);
    }
    for (const kid of kids) {
      assert.notEqual(kid.sandboxId, src.sandboxId);
      assert.equal(await kid.files.read('/home/user/kept.txt'), 'from the source');
      assert.equal((await kid.commands.run('cat /opt/app/state')).stdout, 'data\n');
      // Ownership is the kid's own: user owns what the source's user owned.
      assert.equal((await kid.commands.run('stat -c %U /opt/app /home/user/kept.txt')).stdout, 'user\nuser\n');
      assert.equal((await kid.commands.run('test -e /etc/motd || echo gone')).stdout, 'gone\n', 'a deletion is kept too');
      assert.equal(await kid.files.exists('/home/user/after.txt'), false);
      const info = await kid.getInfo();
      assert.equal(info.state, 'running');
      const raw = await (await api(`/sandboxes/${kid.sandboxId}`)).json();
      assert.equal(raw.lineage.parentSandboxID, src.sandboxId);
      assert.ok(raw.lineage.snapshotID);
    }
    // Each kid writes its own layer: a write in one is not in another.
    if (kids.length > 1) {
      await kids[0].files.write('/home/user/kept.txt', 'changed in one');
      assert.equal(await kids[1].files.read('/home/user/kept.txt'), 'from the source');
      assert.equal(await src.files.read('/home/user/kept.txt'), 'from the source');
    }
    for (const kid of kids) await kid.kill();
  }

  // The source's token does not open a sandbox restored from its memory.
  const kid = await Sandbox.create(snap.snapshotId, { ...gw.opts, timeoutMs: 120_000 });
  const raw = await (await api(`/sandboxes/${kid.sandboxId}`)).json();
  assert.notEqual(raw.envdAccessToken, (await (await api(`/sandboxes/${src.sandboxId}`)).json()).envdAccessToken);
  const withParentToken = await fetch(`${gw.url}/envs`, { headers: { 'E2b-Sandbox-Id': kid.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': (await (await api(`/sandboxes/${src.sandboxId}`)).json()).envdAccessToken } });
  assert.equal(withParentToken.status, 401);
  await kid.kill();

  // List, filter, page.
  const all = await Sandbox.listSnapshots({ ...gw.opts }).nextItems();
  assert.equal(all.length, 2);
  const bySource = await Sandbox.listSnapshots({ ...gw.opts, sandboxId: src.sandboxId }).nextItems();
  assert.equal(bySource.length, 2);
  const byName = await Sandbox.listSnapshots({ ...gw.opts, name: 'my-snap' }).nextItems();
  assert.deepEqual(byName.map((s) => s.snapshotId), [snap.snapshotId]);
  const pager = Sandbox.listSnapshots({ ...gw.opts, limit: 1 });
  const page1 = await pager.nextItems();
  assert.equal(page1.length, 1);
  assert.equal(pager.hasNext, true);
  const page2 = await pager.nextItems();
  assert.equal(page2.length, 1);
  assert.notEqual(page1[0].snapshotId, page2[0].snapshotId);
  assert.equal(pager.hasNext, false);
  assert.equal((await api('/snapshots?limit=0')).status, 400);

  // Another team: nothing to see, start, delete or take.
  assert.deepEqual(await (await api('/snapshots', {}, OTHER_KEY)).json(), []);
  assert.equal((await api('/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: snap.snapshotId }) }, OTHER_KEY)).status, 404);
  assert.equal((await api(`/templates/${snap.snapshotId}`, { method: 'DELETE' }, OTHER_KEY)).status, 404);
  assert.equal((await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: '{}' }, OTHER_KEY)).status, 404);

  // An unknown snapshot at create: 404 (the SDK's NotFoundError family).
  const unknown = await api('/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'aaaaaaaaaaaaaaaaaaaa' }) });
  assert.equal(unknown.status, 404);

  // Delete: the files stay while a sandbox stands on them, go with the last.
  const onIt = await Sandbox.create(fo.snapshotID, { ...gw.opts, timeoutMs: 120_000 });
  assert.equal(await Sandbox.deleteSnapshot(fo.snapshotID, { ...gw.opts }), true);
  assert.equal(await Sandbox.deleteSnapshot(fo.snapshotID, { ...gw.opts }), false);
  assert.ok(layersOnDisk().includes(fo.snapshotID), 'kept while a sandbox stands on it');
  assert.equal(await onIt.files.read('/home/user/kept.txt'), 'from the source');
  await onIt.kill();
  for (let i = 0; i < 100 && layersOnDisk().includes(fo.snapshotID); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!layersOnDisk().includes(fo.snapshotID), 'gone with the last sandbox on it');
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, { ...gw.opts }), true);
  for (let i = 0; i < 100 && layersOnDisk().length; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(layersOnDisk(), []);
  await src.kill();
});

test(`[${sdkName}] snapshots and their lineage survive a gateway kill -9; leftovers of a cut snapshot are removed`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await src.files.write('/home/user/f', 'x');
  const snap = await Sandbox.createSnapshot(src.sandboxId, { ...gw.opts });
  const kid = await Sandbox.create(snap.snapshotId, { ...gw.opts, timeoutMs: 600_000 });
  // A layer no snapshot or sandbox names, as a crash mid-snapshot leaves.
  fs.mkdirSync(path.join(snapsDir(), 'zzzzzzzzzzzzzzzzzzzz'));
  fs.mkdirSync(path.join(snapsDir(), 'zzzzzzzzzzzzzzzzzzzz.images'));
  const dirsnaps = path.join(stateDir, 'sandboxes', '.dirsnapshots');
  fs.mkdirSync(path.join(dirsnaps, 'zzzzzzzzzzzzzzzzzzzz'), { recursive: true });
  await gw.kill9();
  gw = await start();
  assert.deepEqual(layersOnDisk().filter((n) => n.startsWith('zzz')), []);
  assert.deepEqual(fs.readdirSync(dirsnaps), [], 'a directory snapshot copy no row names is removed');
  const raw = await (await api(`/sandboxes/${kid.sandboxId}`)).json();
  assert.equal(raw.lineage.parentSandboxID, src.sandboxId);
  assert.equal(raw.lineage.snapshotID, snap.snapshotId);
  const kidNow = await Sandbox.connect(kid.sandboxId, { ...gw.opts });
  assert.equal(await kidNow.files.read('/home/user/f'), 'x');
  const again = await Sandbox.create(snap.snapshotId, { ...gw.opts, timeoutMs: 60_000 });
  assert.equal(await again.files.read('/home/user/f'), 'x');
  // Paused to disk and resumed, it stands on the snapshot's files again.
  await again.files.write('/home/user/own', 'mine');
  assert.equal(await again.pause({ keepMemory: false }), true);
  const resumed = await Sandbox.connect(again.sandboxId, { ...gw.opts });
  assert.equal(await resumed.files.read('/home/user/f'), 'x');
  assert.equal(await resumed.files.read('/home/user/own'), 'mine');
  await again.kill();
  await kidNow.kill();
  await Sandbox.kill(src.sandboxId, { ...gw.opts });
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, { ...gw.opts }), true);
});

// Directory snapshots (an extension): one directory of a sandbox kept by
// name and restored into another sandbox of the team, owned by its users;
// paths resolve inside the sandbox (a planted symlink cannot reach the
// host); sizes are bounded; other teams see nothing.
test(`[${sdkName}] directory snapshot and restore across two sandboxes, symlink escapes refused`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const a = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const b = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await a.files.write('/home/user/proj/src/main.py', 'print(1)');
  await a.files.write('/home/user/proj/README', 'hello');
  await a.commands.run('ln -s ../README /home/user/proj/src/link && ln -s / /home/user/rootlink && ln -s /etc /home/user/etclink');
  await a.commands.run('echo only-here > /etc/sandbox-marker', { user: 'root' });
  const post = (id, sub, body, key) => api(`/sandboxes/${id}/dirsnapshots${sub}`, { method: 'POST', body: JSON.stringify(body) }, key);

  const made = await post(a.sandboxId, '', { path: '/home/user/proj', name: 'proj' });
  assert.equal(made.status, 201, await made.clone().text());
  const rec = await made.json();
  assert.equal(rec.name, 'proj');
  assert.ok(rec.sizeBytes > 0);
  assert.equal((await post(a.sandboxId, '', { path: '/home/user/proj', name: 'proj' })).status, 409, 'names are unique');
  // Restore into another sandbox of the team: the files, owned by its user.
  const restored = await post(b.sandboxId, '/proj/restore', { path: '/home/user/copy' });
  assert.equal(restored.status, 204, await restored.clone().text());
  assert.equal(await b.files.read('/home/user/copy/src/main.py'), 'print(1)');
  assert.equal((await b.commands.run('stat -c %U /home/user/copy /home/user/copy/src/main.py && readlink /home/user/copy/src/link')).stdout, 'user\nuser\n../README\n');
  await b.files.write('/home/user/copy/README', 'mine');  // its user can write there
  assert.equal((await post(b.sandboxId, '/proj/restore', { path: '/home/user/copy' })).status, 409, 'the target exists');

  // Paths resolve inside the sandbox: a symlink to / names the sandbox's own root.
  const viaLink = await post(a.sandboxId, '', { path: '/home/user/etclink', name: 'etc' });
  assert.equal(viaLink.status, 201, await viaLink.clone().text());
  // What it copied is the sandbox's /etc (a file only the sandbox has), not the host's.
  const dirsnaps = path.join(stateDir, 'sandboxes', '.dirsnapshots');
  const etcCopy = fs.readdirSync(dirsnaps).map((d) => path.join(dirsnaps, d)).filter((d) => fs.existsSync(path.join(d, 'sandbox-marker')));
  assert.equal(etcCopy.length, 1, 'the copy holds the sandbox\'s own /etc');
  // Restoring through a symlinked parent lands inside the sandbox too.
  await b.commands.run('ln -s / /home/user/up');
  const through = await post(b.sandboxId, '/proj/restore', { path: '/home/user/up/tmp/viaup' });
  assert.equal(through.status, 204, await through.clone().text());
  assert.equal(await b.files.read('/tmp/viaup/README'), 'hello');
  assert.ok(!fs.existsSync('/tmp/viaup'), 'nothing written on the host');
  // Mounts are not copied, magic links not followed, bad input is a 4xx.
  assert.equal((await post(a.sandboxId, '', { path: '/', name: 'root' })).status >= 400, true);
  assert.equal((await post(a.sandboxId, '', { path: '/proc/1/root', name: 'magic' })).status, 400);
  assert.equal((await post(a.sandboxId, '', { path: 'relative', name: 'x' })).status, 400);
  assert.equal((await post(a.sandboxId, '', { path: '/home/user', name: '../x' })).status, 400);
  assert.equal((await post(a.sandboxId, '', { path: '/nope', name: 'nope' })).status, 404);
  assert.equal((await post(b.sandboxId, '/nosuch/restore', { path: '/tmp/x' })).status, 404);
  // Other teams: not found, nothing listed.
  assert.equal((await post(a.sandboxId, '', { path: '/home/user/proj', name: 'other' }, OTHER_KEY)).status, 404);
  assert.deepEqual(await (await api('/dirsnapshots', {}, OTHER_KEY)).json(), []);
  assert.equal((await api('/dirsnapshots/proj', { method: 'DELETE' }, OTHER_KEY)).status, 404);
  const listed = await (await api('/dirsnapshots')).json();
  assert.deepEqual(listed.map((d) => d.name).sort(), ['etc', 'proj']);
  assert.equal((await api('/dirsnapshots/proj', { method: 'DELETE' })).status, 204);
  assert.equal((await api('/dirsnapshots/etc', { method: 'DELETE' })).status, 204);
  assert.equal((await api('/dirsnapshots/proj', { method: 'DELETE' })).status, 404);
  assert.deepEqual(fs.readdirSync(path.join(stateDir, 'sandboxes', '.dirsnapshots')), []);
  await a.kill();
  await b.kill();
});

// The CLI: sandbox snapshot, snapshot ls, sandbox fork, snapshot rm.
test(`[${sdkName}] coppice sandbox snapshot / fork, snapshot ls / rm`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const cli = (...args) => new Promise((resolve) => {
    execFile(path.join(buildDir, 'coppice'), args, { env: { ...process.env, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY }, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
  });
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await src.files.write('/home/user/cli.txt', 'cli');
  const made = await cli('sandbox', 'snapshot', src.sandboxId, '--name', 'from-cli', '--no-memory');
  assert.equal(made.code, 0, made.stderr);
  const snapId = made.stdout.trim();
  const ls = await cli('snapshot', 'ls', '--sandbox', src.sandboxId);
  assert.match(ls.stdout, new RegExp(`${snapId}\\s+from-cli\\s+${src.sandboxId}\\s+no`));
  const forked = await cli('sandbox', 'fork', src.sandboxId, '--count', '2');
  assert.equal(forked.code, 0, forked.stderr);
  const kids = forked.stdout.trim().split('\n');
  assert.equal(kids.length, 2);
  for (const id of kids) {
    const kid = await Sandbox.connect(id, { ...gw.opts });
    assert.equal(await kid.files.read('/home/user/cli.txt'), 'cli');
    await kid.kill();
  }
  assert.equal((await cli('sandbox', 'fork', src.sandboxId, '--count', '0')).code !== 0, true);
  assert.equal((await cli('snapshot', 'rm', 'from-cli')).code, 0);
  const gone = await cli('snapshot', 'rm', 'from-cli');
  assert.notEqual(gone.code, 0);
  assert.match(gone.stderr, /not found/);
  await src.kill();
});

// A snapshot with memory of a sandbox running a background process (a
// tree of more than one process): it runs on in the new sandbox.
test(`[${sdkName}] snapshot with memory of a background process restores it`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await src.commands.run(`python3 -c 'import time\ni = 0\nwhile True:\n    i += 1\n    open("/tmp/count", "w").write(str(i))\n    time.sleep(0.1)'`, { background: true, timeoutMs: 0 });
  await sleep(300);
  const snap = await Sandbox.createSnapshot(src.sandboxId, { ...gw.opts });
  const kid = await Sandbox.create(snap.snapshotId, { ...gw.opts, timeoutMs: 60_000 });
  const a = Number(await kid.files.read('/tmp/count'));
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(Number(await kid.files.read('/tmp/count')) > a, 'the counter runs on in the restored sandbox');
  await kid.kill();
  await src.kill();
});

// Snapshots taken while other snapshots are deleted (each delete sweeps what
// no sandbox and no stored snapshot names): one in progress is not swept
// from under criu (which then failed "Can't create log file dump.log").
test(`[${sdkName}] snapshots in progress survive the sweeps of other deletes`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const a = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const b = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await a.files.write('/home/user/mark', 'a');
  let done = false;
  const churn = (async () => {
    let n = 0;
    while (!done) {
      const s = await Sandbox.createSnapshot(b.sandboxId, { ...gw.opts });
      assert.equal(await Sandbox.deleteSnapshot(s.snapshotId, gw.opts), true);
      n++;
    }
    return n;
  })();
  const taken = [];
  try {
    for (let i = 0; i < 8; i++) taken.push(await Sandbox.createSnapshot(a.sandboxId, { ...gw.opts }));
  } finally {
    done = true;
  }
  const sweeps = await churn;
  assert.ok(sweeps > 0, 'deletes ran beside the snapshots');
  const kid = await Sandbox.create(taken.at(-1).snapshotId, { ...gw.opts, timeoutMs: 60_000 });
  assert.equal(await kid.files.read('/home/user/mark'), 'a');
  await kid.kill();
  for (const s of taken) assert.equal(await Sandbox.deleteSnapshot(s.snapshotId, gw.opts), true);
  await a.kill();
  await b.kill();
});

// A snapshot's files and memory are of one instant: a process appending
// its counter to a file goes on, in a sandbox started from the snapshot,
// with the next number after the file's last (files taken after the
// processes ran on would hold numbers the restored process writes again).
test(`[${sdkName}] a snapshot's files and memory are of the same instant`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw ??= await start();
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await src.commands.run(`python3 -c 'import time\ni = 0\nwhile True:\n    i += 1\n    with open("/home/user/seq", "a") as f: f.write(str(i) + "\\n")\n    time.sleep(0.001)'`, { background: true, timeoutMs: 0 });
  await sleep(300);
  for (let round = 0; round < 3; round++) {
    const snap = await Sandbox.createSnapshot(src.sandboxId, { ...gw.opts });
    const kid = await Sandbox.create(snap.snapshotId, { ...gw.opts, timeoutMs: 60_000 });
    await sleep(200);
    const seq = (await kid.files.read('/home/user/seq')).trim().split('\n').map(Number);
    const broken = seq.findIndex((n, i) => n !== i + 1);
    assert.equal(broken, -1, `round ${round}: line ${broken + 1} is ${seq[broken]} after ${seq[broken - 1]}`);
    assert.ok(seq.length > 100, 'the restored process went on writing');
    await kid.kill();
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, gw.opts), true);
  }
  const n = (await src.commands.run('wc -l < /home/user/seq')).stdout.trim();
  assert.ok(Number(n) > 100, 'the source went on too');
  await src.kill();
});
