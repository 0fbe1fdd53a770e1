// Volumes through the real SDK: Volume.create/list/getInfo/destroy, the
// volume content API (the Volume's file methods, with its own token), a
// create's volumeMounts, data that outlives sandboxes, a volume shared by
// sandboxes of different host uid ranges, 409 while in use (a kill -9
// restart included), team isolation, bad names and paths, the quota, hot
// mount and unmount, and a sandbox's root that tries to escape through a
// volume. Needs root, loop devices and btrfs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, buildDir, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason() ||
  (!fs.existsSync('/dev/loop-control') ? 'no loop devices' : null) ||
  (!['/usr/sbin/mkfs.btrfs', '/sbin/mkfs.btrfs', '/usr/bin/mkfs.btrfs'].some((p) => fs.existsSync(p)) ? 'no mkfs.btrfs (btrfs-progs)' : null);
const opt = skip ? { skip } : {};
const KEY_B = 'e2b_' + 'b7'.repeat(20);
const MiB = 1 << 20;
let gw, sdk, Sandbox, Volume;
const sandboxes = [];  // [sandbox, key]: killed at the end whatever happens

before(async () => {
  if (skip) return;
  sdk = await loadSdk();
  ({ Sandbox, Volume } = sdk);
  gw = await startGateway({ apiKeys: `${TEST_API_KEY},team-b:${KEY_B}` });
  // Where the SDK sends a Volume's file requests (E2B: https://api.<domain>).
  process.env.E2B_VOLUME_API_URL = gw.url;
});
after(async () => {
  if (!gw) return;
  for (const [id, key] of sandboxes) {
    try { await fetch(`${gw.url}/sandboxes/${id}`, { method: 'DELETE', headers: { 'X-API-KEY': key } }); } catch {}
  }
  await gw.stop();
});

const as = (apiKey) => ({ ...gw.opts, apiKey });
const api = (p, init = {}, key = TEST_API_KEY) => fetch(`${gw.url}${p}`, {
  ...init, headers: { 'X-API-KEY': key, 'content-type': 'application/json', ...(init.headers || {}) },
});
// A request whose path goes out as written (fetch folds "/a/.." and "%2e%2e" away).
const rawStatus = (method, p, key = TEST_API_KEY) => new Promise((resolve, reject) => {
  const req = http.request({ host: '127.0.0.1', port: gw.port, method, path: p, headers: { 'X-API-KEY': key } }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode));
  });
  req.on('error', reject);
  req.end();
});
async function create(opts = {}, key = TEST_API_KEY) {
  const sbx = await Sandbox.create({ ...as(key), ...opts });
  sandboxes.push([sbx.sandboxId, key]);
  return sbx;
}
const sh = async (sbx, cmd, user) => (await sbx.commands.run(cmd, user ? { user } : {})).stdout;
const uniq = (n) => `${n}-${sdkName}-${Math.random().toString(36).slice(2, 8)}`;

test(`[${sdkName}] a volume outlives its sandboxes; list, get, delete; 409 while mounted`, opt, async () => {
  const vol = await Volume.create(uniq('data'), { ...gw.opts });
  assert.match(vol.volumeId, /^[a-z0-9]{20}$/);
  assert.ok(vol.token.length >= 32, 'a token for the content API');
  const info = await Volume.getInfo(vol.volumeId, { ...gw.opts });
  assert.equal(info.name, vol.name);
  assert.equal(info.token, vol.token);
  assert.ok((await Volume.list({ ...gw.opts })).some((v) => v.volumeId === vol.volumeId && v.name === vol.name));

  // Written in A (as `user` and as root), read in B after A is gone.
  const a = await create({ volumeMounts: { '/mnt/data': vol } });
  await sh(a, 'echo hello > /mnt/data/hello.txt && mkdir -p /mnt/data/sub && echo deep > /mnt/data/sub/f');
  await sh(a, 'echo from-root > /mnt/data/root.txt', 'root');
  assert.equal(await sh(a, 'stat -c "%U %a" /mnt/data/hello.txt /mnt/data/root.txt'), 'user 644\nroot 644\n');
  const mounts = await (await api(`/sandboxes/${a.sandboxId}`)).json();
  assert.deepEqual(mounts.volumeMounts, [{ name: vol.name, path: '/mnt/data' }]);
  assert.match(await sh(a, 'grep " /mnt/data " /proc/self/mountinfo'), /nosuid,nodev/);
  await a.kill();

  const b = await create({ volumeMounts: { '/data': vol.name } });  // by name, at another path
  assert.equal(await sh(b, 'cat /data/hello.txt /data/sub/f /data/root.txt'), 'hello\ndeep\nfrom-root\n');
  assert.equal(await sh(b, 'stat -c %U /data/hello.txt'), 'user\n', 'the owner as sandboxes see it');

  // The content API sees the same files, with the ids sandboxes see.
  assert.equal(await vol.readFile('/hello.txt'), 'hello\n');
  const st = await vol.getInfo('/hello.txt');
  assert.equal(st.type, 'file');
  assert.equal(st.uid, 1000);
  assert.equal(st.size, 6);
  const names = (await vol.list('/')).map((e) => e.name).sort();
  assert.deepEqual(names, ['hello.txt', 'root.txt', 'sub']);
  assert.deepEqual((await vol.list('/', { depth: 2 })).map((e) => e.path).sort(),
    ['/hello.txt', '/root.txt', '/sub', '/sub/f']);
  await vol.writeFile('/api/written.txt', 'from the api');
  await vol.makeDir('/made/deep', { force: true });
  await vol.updateMetadata('/api/written.txt', { mode: 0o600 });
  assert.equal(await sh(b, 'cat /data/api/written.txt; echo; stat -c "%U %a" /data/api/written.txt; test -d /data/made/deep && echo dir'),
    'from the api\nuser 600\ndir\n');
  assert.equal(await vol.exists('/nope'), false);
  await assert.rejects(vol.readFile('/nope'), sdk.VolumePathNotFoundError);
  await vol.remove('/made');
  assert.equal(await vol.exists('/made'), false);
  assert.equal((await fetch(`${gw.url}/volumecontent/${vol.volumeId}/path?path=/`, { headers: { Authorization: 'Bearer wrong' } })).status, 401);

  // In use: not deletable (409 with a message) until its sandbox is gone.
  const busy = await api(`/volumes/${vol.volumeId}`, { method: 'DELETE' });
  assert.equal(busy.status, 409);
  assert.match((await busy.json()).message, /mounted/);
  await assert.rejects(Volume.destroy(vol.volumeId, { ...gw.opts }), sdk.VolumeError);
  await b.kill();
  assert.equal(await Volume.destroy(vol.volumeId, { ...gw.opts }), true);
  await assert.rejects(Volume.getInfo(vol.volumeId, { ...gw.opts }), sdk.VolumeNotFoundError);
  assert.equal(await Volume.destroy(vol.volumeId, { ...gw.opts }), false);
});

test(`[${sdkName}] two sandboxes of different host uid ranges share a volume with the same owners`, opt, async () => {
  const vol = await Volume.create(uniq('shared'), { ...gw.opts });
  const a = await create({ volumeMounts: { '/shared': vol } });
  const b = await create({ volumeMounts: { '/shared': vol } });
  try {
    const hostUid = async (s) => (await sh(s, 'cat /proc/self/uid_map')).trim().split(/\s+/)[1];
    assert.notEqual(await hostUid(a), await hostUid(b), 'each sandbox has its own host uids');
    await sh(a, 'echo one > /shared/by-a');
    assert.equal(await sh(b, 'stat -c %U /shared/by-a && echo two >> /shared/by-a && cat /shared/by-a'), 'user\none\ntwo\n');
    assert.equal(await sh(a, 'cat /shared/by-a'), 'one\ntwo\n');
  } finally {
    await a.kill();
    await b.kill();
    await Volume.destroy(vol.volumeId, { ...gw.opts });
  }
});

test(`[${sdkName}] another team's volumes are missing to a key of team B`, opt, async () => {
  const vol = await Volume.create(uniq('mine'), { ...gw.opts });
  try {
    const b = { ...gw.opts, apiKey: KEY_B };
    await assert.rejects(Volume.getInfo(vol.volumeId, b), sdk.VolumeNotFoundError);
    assert.ok(!(await Volume.list(b)).some((v) => v.volumeId === vol.volumeId));
    assert.equal(await Volume.destroy(vol.volumeId, b), false, 'a delete is a 404');
    // A volume of the same name is B's own.
    const theirs = await Volume.create(vol.name, b);
    assert.notEqual(theirs.volumeId, vol.volumeId);
    const sb = await create({}, KEY_B);
    // B cannot mount A's volume, by name (it finds its own) or by id.
    const byId = await api(`/sandboxes/${sb.sandboxId}/volumes`, { method: 'POST', body: JSON.stringify({ volumeID: vol.volumeId, path: '/x' }) }, KEY_B);
    assert.equal(byId.status, 404);
    // Nor mount anything into A's sandbox.
    const sa = await create();
    const intoA = await api(`/sandboxes/${sa.sandboxId}/volumes`, { method: 'POST', body: JSON.stringify({ name: theirs.name, path: '/x' }) }, KEY_B);
    assert.equal(intoA.status, 404);
    await sa.kill();
    await sb.kill();
    assert.equal(await Volume.destroy(theirs.volumeId, b), true);
  } finally {
    await Volume.destroy(vol.volumeId, { ...gw.opts });
  }
});

test(`[${sdkName}] bad volume names and mount paths are 400 with a message`, opt, async () => {
  for (const name of ['..', '.', 'a/b', '../etc', '', 'x'.repeat(65), 'sp ace']) {
    const r = await api('/volumes', { method: 'POST', body: JSON.stringify({ name }) });
    assert.equal(r.status, 400, `name ${JSON.stringify(name)}`);
    assert.match((await r.json()).message, /name/);
  }
  await assert.rejects(Volume.create('../x', { ...gw.opts }));
  assert.equal(await rawStatus('GET', '/volumes/..'), 404);
  assert.equal(await rawStatus('DELETE', '/volumes/..'), 404);
  assert.equal((await api('/volumes', { method: 'POST', body: JSON.stringify({ name: uniq('s'), sizeMB: 0 }) })).status, 400);
  const vol = await Volume.create(uniq('paths'), { ...gw.opts });
  try {
    for (const p of ['relative', '/', '/proc/x', '/sys', '/dev/shm/v', '/.coppice/run', '/a/../b', '/a/./b', '/a\nb']) {
      const r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ templateID: 'base', volumeMounts: [{ name: vol.name, path: p }] }) });
      assert.equal(r.status, 400, `path ${JSON.stringify(p)}`);
      assert.match((await r.json()).message, /mount path/);
    }
    await assert.rejects(Sandbox.create({ ...gw.opts, volumeMounts: { '/proc/v': vol } }), /400: volume mount path "\/proc\/v"/);
    const unknown = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ volumeMounts: [{ name: 'no-such-volume', path: '/v' }] }) });
    assert.equal(unknown.status, 400);
    assert.match((await unknown.json()).message, /not found/);
    // Paths that cross the template's own symlinks (/bin -> usr/bin) or its
    // read-only host binds (/usr): refused by the sandbox's first process,
    // which leaves nothing behind.
    for (const p of ['/bin/vol', '/usr/vol']) {
      const r = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ volumeMounts: [{ name: vol.name, path: p }] }) });
      assert.equal(r.status, 400, `path ${p}: ${await r.clone().text()}`);
      assert.match((await r.json()).message, /ELOOP|EXDEV/);
    }
    const twice = await api('/v2/sandboxes', { method: 'POST', body: JSON.stringify({ volumeMounts: [{ name: vol.name, path: '/v' }, { name: vol.name, path: '/v/' }] }) });
    assert.equal(twice.status, 400);
    assert.equal((await api('/v2/sandboxes?state=running')).ok, true);
    // Content paths: no way out of the volume.
    await assert.rejects(vol.readFile('/../../etc/passwd'), sdk.VolumeError);
    await assert.rejects(vol.readFile('relative'), sdk.VolumeError);
  } finally {
    await Volume.destroy(vol.volumeId, { ...gw.opts });
  }
});

test(`[${sdkName}] a write past the volume's cap fails with EDQUOT in the sandbox only`, opt, async () => {
  const r = await api('/volumes', { method: 'POST', body: JSON.stringify({ name: uniq('small'), sizeMB: 8 }) });
  assert.equal(r.status, 201);
  const v = await r.json();
  assert.equal(v.sizeMB, 8);
  const sbx = await create({ volumeMounts: { '/small': v.name } });
  try {
    let err;
    try {
      await sbx.commands.run('dd if=/dev/zero of=/small/fill bs=1M count=20');
    } catch (e) { err = e; }
    assert.ok(err, 'dd fails');
    assert.match(`${err.stderr ?? ''} ${err.message}`, /Disk quota exceeded/);
    // The sandbox's own layer is not the volume's.
    assert.equal(await sh(sbx, 'dd if=/dev/zero of=/home/user/own bs=1M count=12 2>/dev/null && stat -c %s /home/user/own'), String(12 * MiB) + '\n');
    const vol = new Volume(v.volumeID, v.name, v.token);
    await assert.rejects(vol.writeFile('/big', new Uint8Array(12 * MiB).buffer), (e) => /quota|space/i.test(e.message));
    await sh(sbx, 'rm /small/fill');
    await vol.writeFile('/after', 'room again');
  } finally {
    await sbx.kill();
    await api(`/volumes/${v.volumeID}`, { method: 'DELETE' });
  }
});

test(`[${sdkName}] hot mount and unmount in a running sandbox`, opt, async () => {
  const vol = await Volume.create(uniq('hot'), { ...gw.opts });
  await vol.writeFile('/seed.txt', 'seeded');
  const sbx = await create();
  try {
    const m = await api(`/sandboxes/${sbx.sandboxId}/volumes`, { method: 'POST', body: JSON.stringify({ name: vol.name, path: '/home/user/work/vol' }) });
    assert.equal(m.status, 201, await m.clone().text());
    assert.equal(await sh(sbx, 'cat /home/user/work/vol/seed.txt; echo more > /home/user/work/vol/more.txt'), 'seeded');
    assert.equal(await sh(sbx, 'stat -c %U /home/user/work'), 'user\n', 'a directory made on the way belongs to its parent\'s owner');
    assert.equal(await vol.readFile('/more.txt'), 'more\n');
    const list = await (await api(`/sandboxes/${sbx.sandboxId}/volumes`)).json();
    assert.deepEqual(list, [{ name: vol.name, path: '/home/user/work/vol', volumeID: vol.volumeId }]);
    // The same path twice: 409.
    const again = await api(`/sandboxes/${sbx.sandboxId}/volumes`, { method: 'POST', body: JSON.stringify({ name: vol.name, path: '/home/user/work/vol' }) });
    assert.equal(again.status, 409);
    // The sandbox's root cannot unmount it.
    await assert.rejects(sbx.commands.run('umount /home/user/work/vol', { user: 'root' }));
    assert.equal((await api(`/volumes/${vol.volumeId}`, { method: 'DELETE' })).status, 409);
    assert.equal(await rawStatus('DELETE', `/sandboxes/${sbx.sandboxId}/volumes/..`), 404);
    assert.equal(await rawStatus('DELETE', `/sandboxes/${sbx.sandboxId}/volumes/../../x`), 404);
    const u = await api(`/sandboxes/${sbx.sandboxId}/volumes/${vol.name}`, { method: 'DELETE' });
    assert.equal(u.status, 204);
    assert.equal(await sh(sbx, 'ls -A /home/user/work/vol | wc -l'), '0\n', 'unmounted: the empty mount point is left');
    assert.equal((await api(`/sandboxes/${sbx.sandboxId}/volumes/${vol.name}`, { method: 'DELETE' })).status, 404);
    assert.equal(await Volume.destroy(vol.volumeId, { ...gw.opts }), true, 'free again once unmounted');
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] a sandbox's root cannot redirect a mount or the content API out of its root`, opt, async () => {
  const vol = await Volume.create(uniq('esc'), { ...gw.opts });
  const hostDir = path.join(os.tmpdir(), `coppice-escape-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const sbx = await create({ volumeMounts: { '/mnt/v': vol } });
  try {
    // Symlinks planted at the target and on the way to it, naming host paths.
    await sh(sbx, `ln -s ${hostDir} /home/user/target && ln -s /tmp /home/user/via && ln -s /root /home/user/rootlink`);
    for (const p of ['/home/user/target', '/home/user/via/x', '/home/user/rootlink', '/home/user/target/deeper']) {
      const r = await api(`/sandboxes/${sbx.sandboxId}/volumes`, { method: 'POST', body: JSON.stringify({ name: vol.name, path: p }) });
      assert.equal(r.status, 400, `mount at ${p}`);
      assert.match((await r.json()).message, /symlink/);
    }
    assert.equal(fs.existsSync(hostDir), false, 'nothing was made on the host');
    assert.equal(await sh(sbx, 'ls -A /tmp | grep -c x || true'), '0\n');
    assert.equal((await (await api(`/sandboxes/${sbx.sandboxId}/volumes`)).json()).length, 1, 'no mount recorded');

    // Links and a FIFO in the volume: the content API stays inside it.
    await sh(sbx, 'ln -s / /mnt/v/root && ln -s /etc/shadow /mnt/v/shadow && ln -s ../../../../etc/passwd /mnt/v/up && mkfifo /mnt/v/fifo', 'root');
    await assert.rejects(vol.readFile('/shadow'), sdk.VolumePathNotFoundError);
    await assert.rejects(vol.readFile('/up'), sdk.VolumePathNotFoundError);
    await assert.rejects(vol.readFile('/root/etc/passwd'), sdk.VolumePathNotFoundError);
    const rootList = (await vol.list('/root')).map((e) => e.name).sort();
    assert.deepEqual(rootList, ['fifo', 'root', 'shadow', 'up'], 'the volume, not the host, is its root');
    const t0 = Date.now();
    await assert.rejects(vol.readFile('/fifo'), sdk.VolumeError);
    assert.ok(Date.now() - t0 < 5000, 'a FIFO is refused, not waited on');
    const link = await vol.getInfo('/shadow');
    assert.equal(link.type, 'symlink');
    assert.equal(link.target, '/etc/shadow');
    await vol.writeFile('/root/through-link.txt', 'inside');  // the link resolves inside the volume
    assert.equal(await sh(sbx, 'cat /mnt/v/through-link.txt'), 'inside');
    await vol.remove('/root');  // the link, not what it names
    assert.equal(await sh(sbx, 'ls /mnt/v | sort | tr "\\n" " "'), 'fifo shadow through-link.txt up ');
  } finally {
    await sbx.kill();
    await Volume.destroy(vol.volumeId, { ...gw.opts });
    fs.rmSync(hostDir, { recursive: true, force: true });
  }
});

test(`[${sdkName}] the CLI lists, creates, mounts, unmounts and deletes volumes`, opt, async () => {
  const cli = (...args) => execFileSync(path.join(buildDir, 'coppice'), args, {
    env: { ...process.env, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY }, encoding: 'utf8',
  });
  const name = uniq('cli');
  const id = cli('volume', 'create', name, '--size-mb', '32').trim();
  assert.match(id, /^[a-z0-9]{20}$/);
  assert.match(cli('volume', 'list'), new RegExp(`${id}\\s+${name}\\s+32`));
  const sbx = await create();
  cli('volume', 'mount', sbx.sandboxId, name, '/cli-vol');
  await sh(sbx, 'echo via-cli > /cli-vol/f');
  assert.throws(() => cli('volume', 'delete', id), /mounted/);
  cli('volume', 'unmount', sbx.sandboxId, name);
  await sbx.kill();
  cli('volume', 'delete', id);
  assert.doesNotMatch(cli('volume', 'list'), new RegExp(id));
  assert.throws(() => cli('volume', 'create', '..'), /invalid volume name/);
});

test(`[${sdkName}] without disk quotas volumes are plain directories with no cap`, opt, async () => {
  const plain = await startGateway({ extraArgs: ['--disk-quota', 'off'] });
  try {
    const o = { ...plain.opts };
    const r = await fetch(`${plain.url}/volumes`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'plain', sizeMB: 8 }) });
    assert.equal(r.status, 201);
    const v = await r.json();
    assert.equal(v.sizeMB, 0, 'no cap is enforced, and it says so');
    const a = await Sandbox.create({ ...o, volumeMounts: { '/p': 'plain' } });
    await a.commands.run('echo kept > /p/f');
    await a.kill();
    const b = await Sandbox.create({ ...o, volumeMounts: { '/q': 'plain' } });
    assert.equal((await b.commands.run('cat /q/f; stat -c %U /q/f')).stdout, 'kept\nuser\n');
    await b.kill();
    assert.equal(await Volume.destroy(v.volumeID, o), true);
  } finally {
    await plain.stop();
  }
});

test(`[${sdkName}] a kill -9 restart keeps volumes, their files and which are in use`, opt, async () => {
  const vol = await Volume.create(uniq('kept'), { ...gw.opts });
  const sbx = await create({ volumeMounts: { '/kept': vol } });
  await sh(sbx, 'echo before > /kept/f');
  await gw.kill9();
  // The same state dir; at the end the second gateway stops first, then the
  // first one's stop removes the state dir it made.
  const first = gw;
  const second = await startGateway({ stateDir: first.stateDir, apiKeys: `${TEST_API_KEY},team-b:${KEY_B}` });
  gw = { ...second, stop: async () => { await second.stop(); await first.stop(); } };
  process.env.E2B_VOLUME_API_URL = gw.url;
  const again = await Volume.getInfo(vol.volumeId, { ...gw.opts });
  assert.equal(again.token, vol.token);
  const busy = await api(`/volumes/${vol.volumeId}`, { method: 'DELETE' });
  assert.equal(busy.status, 409, 'the adopted sandbox still has it mounted');
  const s = await Sandbox.connect(sbx.sandboxId, { ...gw.opts });
  assert.equal(await sh(s, 'cat /kept/f'), 'before\n');
  await s.kill();
  assert.equal((await api(`/volumes/${vol.volumeId}`, { method: 'DELETE' })).status, 204);
});
