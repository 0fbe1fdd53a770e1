// Per-sandbox disk quotas through the real SDK: a sandbox that writes past
// its diskSizeMB gets "Disk quota exceeded" (a files.write, the SDK's
// NotEnoughSpaceError), another sandbox and the gateway go on, and the
// metrics show the disk used and its cap. Every sandbox here has 20 MiB
// (--default-disk-mb 20). Needs root, loop devices and btrfs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, mountsUnder, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason() ||
  (!fs.existsSync('/dev/loop-control') ? 'no loop devices' : null) ||
  (!['/usr/sbin/mkfs.btrfs', '/sbin/mkfs.btrfs', '/usr/bin/mkfs.btrfs'].some((p) => fs.existsSync(p)) ? 'no mkfs.btrfs (btrfs-progs)' : null);
const opt = skip ? { skip } : {};
let gw, Sandbox, sdk;
let startMs = 0;
before(async () => {
  if (skip) return;
  sdk = await loadSdk();
  Sandbox = sdk.Sandbox;
  const t0 = Date.now();
  gw = await startGateway({ extraArgs: ['--default-disk-mb', '20', '--disk-image-size', '512M'] });
  startMs = Date.now() - t0;
});
after(async () => { await gw?.stop(); });

const MiB = 1 << 20;

test(`[${sdkName}] the gateway mounts the sandboxes' image and reports each sandbox's cap`, opt, async () => {
  console.log(`# gateway start with a new 512 MiB image: ${startMs} ms`);
  const sandboxes = path.join(fs.realpathSync(gw.stateDir), 'sandboxes');
  assert.deepEqual(mountsUnder(gw.stateDir), [sandboxes], 'one mount, on <state>/sandboxes');
  assert.ok(fs.statSync(path.join(gw.stateDir, 'disk.img')).blocks * 512 < 64 * MiB, 'the image is sparse');
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    const info = await (await fetch(`${gw.url}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
    assert.equal(info.diskSizeMB, 20);
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] dd past the quota fails inside; another sandbox and the gateway go on`, opt, async () => {
  const a = await Sandbox.create({ ...gw.opts });
  const b = await Sandbox.create({ ...gw.opts });
  try {
    let err;
    try {
      await a.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=40');
    } catch (e) { err = e; }
    assert.ok(err, 'dd fails');
    assert.match(`${err.stderr ?? ''} ${err.message}`, /Disk quota exceeded/);
    // What it could write stays, and the sandbox still runs commands.
    const size = Number((await a.commands.run('stat -c %s /home/user/fill')).stdout.trim());
    assert.ok(size > 15 * MiB && size <= 20 * MiB, `wrote ${size} bytes`);
    assert.equal((await a.commands.run('echo alive')).stdout, 'alive\n');

    // The other sandbox has its own 20 MiB.
    await b.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=15');
    assert.equal((await b.commands.run('stat -c %s /home/user/fill')).stdout.trim(), String(15 * MiB));

    // The gateway still creates sandboxes and answers.
    const c = await Sandbox.create({ ...gw.opts });
    await c.kill();

    // Space freed inside can be used again.
    await a.commands.run('rm /home/user/fill && dd if=/dev/zero of=/home/user/again bs=1M count=10');
  } finally {
    await a.kill();
    await b.kill();
  }
});

test(`[${sdkName}] files.write of a file past the quota fails with a clear error`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    let err;
    try {
      await sbx.files.write('/home/user/big.bin', new Uint8Array(30 * MiB).fill(7).buffer);
    } catch (e) { err = e; }
    assert.ok(err, 'the write fails');
    assert.ok(err instanceof sdk.NotEnoughSpaceError, `${err.name}: ${err.message}`);
    assert.match(err.message, /disk quota exceeded|disk space/);
    // Small files still go in once the big one is gone.
    await sbx.files.write('/home/user/small.txt', 'fits');
    assert.equal(await sbx.files.read('/home/user/small.txt'), 'fits');
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] metrics report the disk used and the cap`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    await sbx.commands.run('head -c 8000000 /dev/urandom > /home/user/blob');
    // Data written back but not yet committed is in neither of the quota's
    // figures for up to a commit interval (5 s): ask again for a while.
    let last;
    for (const until = Date.now() + 15_000; ;) {
      last = (await sbx.getMetrics()).at(-1);
      if (last.diskUsed >= 8_000_000 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(last.diskUsed >= 8_000_000 && last.diskUsed < 20 * MiB, `diskUsed ${last.diskUsed}`);
    assert.equal(last.diskTotal, 20 * MiB);
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] create latency with quotas (cold, figures only)`, opt, async () => {
  const times = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    const sbx = await Sandbox.create({ ...gw.opts });
    times.push(performance.now() - t0);
    await sbx.kill();
  }
  times.sort((x, y) => x - y);
  console.log(`# create -> 201 with a disk quota: p50 ${times[5].toFixed(1)} ms, min ${times[0].toFixed(1)} ms`);
});

// Loop devices whose backing file is `file`.
function loopsOf(file) {
  const out = [];
  for (const n of fs.readdirSync('/sys/block').filter((n) => n.startsWith('loop'))) {
    let b = '';
    try { b = fs.readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim(); } catch { continue; }
    if (b === file) out.push(n);
  }
  return out;
}

test(`[${sdkName}] kill -9 keeps the mount for the sandboxes; a clean stop with none left unmounts`, opt, async (t) => {
  const { removeStateDir, removeCgroupParents } = await import('./lib/harness.mjs');
  const os = await import('node:os');
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-dq-'));
  t.after(() => { removeCgroupParents(stateDir); removeStateDir(stateDir); });
  const image = path.join(fs.realpathSync(stateDir), 'disk.img');
  const args = ['--default-disk-mb', '20', '--disk-image-size', '512M'];
  let g = await startGateway({ stateDir, extraArgs: args });
  const sbx = await Sandbox.create({ ...g.opts, timeoutMs: 120_000 });
  await sbx.commands.run('echo kept > /home/user/note');
  await g.kill9();
  assert.equal(mountsUnder(stateDir).length, 1, 'the mount outlives the gateway');
  const t0 = Date.now();
  g = await startGateway({ stateDir, extraArgs: args });
  console.log(`# gateway restart over a mounted image: ${Date.now() - t0} ms`);
  try {
    assert.equal(mountsUnder(stateDir).length, 1, 'mounted once, not twice');
    assert.equal(loopsOf(image).length, 1);
    const again = await Sandbox.connect(sbx.sandboxId, g.opts);
    assert.equal((await again.commands.run('cat /home/user/note')).stdout, 'kept\n');
    let err;
    try { await again.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=40'); } catch (e) { err = e; }
    assert.match(`${err?.stderr ?? ''}`, /Disk quota exceeded/, 'its quota holds after the restart');
  } finally {
    await g.stop();  // kills the sandbox, then SIGTERM: none left
  }
  assert.deepEqual(mountsUnder(stateDir), [], 'unmounted at a clean stop');
  for (let i = 0; i < 100 && loopsOf(image).length; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(loopsOf(image), [], 'the loop device detached');
});
