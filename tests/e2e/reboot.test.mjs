// A host reboot, simulated, with the real SDK: the gateway is killed with
// SIGKILL and then everything a reboot takes away goes too: every process
// of its sandboxes, their cgroups, every mount under its state dir (the
// sandboxes' disk image included, its loop device detached), the host-wide
// uid range registry entry in /run and criu's probe cache on /dev/shm (both
// tmpfs). What is on disk stays. A gateway started on the same state dir
// then has: the sandbox paused with memory, resumed with its processes and
// their memory; the one paused files-only, resumed cold with its files; the
// snapshot, a sandbox started from it with the snapshot's memory; the
// volume with its data; the sandbox that was running, gone (404), its files
// removed. Needs root, criu, loop devices and btrfs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  cgroupParentDirs, criuSkipReason, mountsUnder, proxyGet, waitFor, keptStateDir, startGateway, gatewaySkipReason, loadSdk,
  sdkName, sleep, uidRangeEntry, TEST_API_KEY,
} from './lib/harness.mjs';

const skip = gatewaySkipReason() || criuSkipReason() ||
  (!fs.existsSync('/dev/loop-control') ? 'no loop devices' : null) ||
  (!['/usr/sbin/mkfs.btrfs', '/sbin/mkfs.btrfs', '/usr/bin/mkfs.btrfs'].some((p) => fs.existsSync(p)) ? 'no mkfs.btrfs (btrfs-progs)' : null);
const opt = skip ? { skip } : {};
const headers = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
let gw;
const stateDir = keptStateDir('reboot', after, () => gw);
const start = () => startGateway({ stateDir, extraArgs: ['--disk-image-size', '512M'] });
const api = (p, init = {}) => fetch(`${gw.url}${p}`, { ...init, headers: { ...headers, ...(init.headers || {}) } });

const viaProxy = (id, p = '/') => proxyGet(gw, id, p);

// A counter only the server's memory holds.
const server = `
import http.server
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        body = str(n).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()
`;

// What a reboot takes away from a gateway killed with SIGKILL.
function reboot() {
  // Every process of its sandboxes (as listed in any of its parent cgroups,
  // v1 hierarchies included), then the cgroups themselves, deepest first.
  const pidsUnder = (d) => {
    let out = [];
    try { out = fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number); } catch {}
    let entries = [];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch {}
    for (const e of entries) if (e.isDirectory()) out.push(...pidsUnder(path.join(d, e.name)));
    return out;
  };
  for (let i = 0; i < 100; i++) {
    const pids = cgroupParentDirs(stateDir).flatMap(pidsUnder);
    if (pids.length === 0) break;
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch {} }
    execFileSync('sleep', ['0.05']);
  }
  const rmTree = (d) => {
    let entries = [];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) if (e.isDirectory()) rmTree(path.join(d, e.name));
    for (let i = 0; i < 100; i++) {
      try { fs.rmdirSync(d); return; } catch (e) { if (e.code === 'ENOENT') return; }
      execFileSync('sleep', ['0.05']);
    }
    throw new Error(`cgroup ${d} stays busy`);
  };
  for (const d of cgroupParentDirs(stateDir)) rmTree(d);
  // Every mount under the state dir, and the image's loop device.
  const image = path.join(stateDir, 'disk.img');
  for (let i = 0; i < 100 && mountsUnder(stateDir).length > 0; i++) {
    for (const mp of mountsUnder(stateDir)) {
      try { execFileSync('umount', ['-l', mp], { stdio: 'ignore' }); } catch {}
    }
  }
  assert.deepEqual(mountsUnder(stateDir), [], 'nothing stays mounted under the state dir');
  const loops = () => execFileSync('losetup', ['-n', '-O', 'NAME', '-j', image], { encoding: 'utf8' }).trim();
  for (let i = 0; i < 100 && loops() !== ''; i++) {
    for (const dev of loops().split('\n').filter(Boolean)) {
      try { execFileSync('losetup', ['-d', dev.trim()], { stdio: 'ignore' }); } catch {}
    }
    execFileSync('sleep', ['0.05']);
  }
  assert.equal(loops(), '', 'the image has no loop device left');
  // tmpfs: the uid range registry entry and criu's probe cache.
  fs.rmSync(uidRangeEntry(stateDir).file, { force: true });
  fs.rmSync('/dev/shm/coppice-criu', { recursive: true, force: true });
}

test(`[${sdkName}] a host reboot: paused sandboxes, snapshots and volumes come back, running ones are gone`, opt, async () => {
  const { Sandbox, Volume } = await loadSdk();
  gw = await start();
  process.env.E2B_VOLUME_API_URL = gw.url;

  // Paused with memory: a server whose counter is at 2.
  const mem = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await mem.files.write('/home/user/srv.py', server);
  await mem.commands.run('python3 /home/user/srv.py', { background: true, timeoutMs: 0 });
  await waitFor('the server', async () => (await viaProxy(mem.sandboxId)).status === 200);
  assert.equal((await viaProxy(mem.sandboxId)).body, '2');
  // A snapshot with memory at 2, before the pause.
  const snap = await api(`/sandboxes/${mem.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ name: 'before-reboot' }) });
  assert.equal(snap.status, 201, await snap.clone().text());
  const snapshotID = (await snap.json()).snapshotID;
  assert.equal(await mem.pause(), true);

  // Paused files-only.
  const cold = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await cold.files.write('/home/user/kept.txt', 'files only\n');
  const p = await api(`/sandboxes/${cold.sandboxId}/pause`, { method: 'POST', body: JSON.stringify({ memory: false }) });
  assert.equal(p.status, 204, await p.text());

  // A volume with data, written through a sandbox that is gone by then.
  const vol = await Volume.create(`reboot-${Date.now()}`, gw.opts);
  const writer = await Sandbox.create({ ...gw.opts, volumeMounts: { '/mnt/v': vol } });
  await writer.commands.run('echo on the volume > /mnt/v/data.txt && sync');
  await writer.kill();

  // Running at the reboot.
  const running = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await running.files.write('/home/user/x.txt', 'x');
  const runningDir = path.join(stateDir, 'sandboxes', running.sandboxId);
  assert.ok(fs.existsSync(runningDir));

  execFileSync('sync');
  await gw.kill9();
  reboot();
  gw = await start();

  // Paused with memory: the same process, its counter goes on.
  const info = await (await api(`/sandboxes/${mem.sandboxId}`)).json();
  assert.equal(info.state, 'paused');
  await Sandbox.connect(mem.sandboxId, gw.opts);
  assert.equal((await viaProxy(mem.sandboxId)).body, '3', 'the counter held in memory goes on');

  // Files-only: a cold boot with the files.
  assert.equal((await (await api(`/sandboxes/${cold.sandboxId}`)).json()).state, 'paused');
  const coldBack = await Sandbox.connect(cold.sandboxId, gw.opts);
  assert.equal(await coldBack.files.read('/home/user/kept.txt'), 'files only\n');
  assert.equal((await coldBack.commands.run('echo up')).stdout, 'up\n');

  // The snapshot: listed, and a sandbox from it starts with its memory (2).
  const listed = await (await api('/snapshots')).json();
  assert.ok(listed.some((s) => s.snapshotID === snapshotID), JSON.stringify(listed));
  const fromSnap = await Sandbox.create(snapshotID, { ...gw.opts, timeoutMs: 600_000 });
  assert.equal((await viaProxy(fromSnap.sandboxId)).body, '3', 'the snapshot\'s counter was at 2');
  const lineage = await (await api(`/sandboxes/${fromSnap.sandboxId}`)).json();
  assert.equal(lineage.lineage?.snapshotID, snapshotID, JSON.stringify(lineage));

  // The volume and its data.
  const reader = await Sandbox.create({ ...gw.opts, volumeMounts: { '/mnt/v': vol } });
  assert.equal((await reader.commands.run('cat /mnt/v/data.txt')).stdout, 'on the volume\n');

  // The running one did not survive: gone, and its files with it.
  assert.equal((await api(`/sandboxes/${running.sandboxId}`)).status, 404);
  assert.equal(fs.existsSync(runningDir), false, 'its state dir is removed');

  for (const s of [mem.sandboxId, cold.sandboxId, fromSnap.sandboxId, reader.sandboxId]) {
    assert.equal((await api(`/sandboxes/${s}`, { method: 'DELETE' })).status, 204);
  }
  assert.equal((await api(`/snapshots/${snapshotID}`, { method: 'DELETE' })).status, 204);
  assert.equal(await Volume.destroy(vol.volumeId, gw.opts), true);
});
