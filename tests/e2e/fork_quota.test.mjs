// Disk quotas of fork children and snapshots, with the real SDK. Every
// sandbox here has 20 MiB (--default-disk-mb 20) and a team's snapshots may
// keep 24 MiB together (--snapshot-disk-mb 24). A fork child's writable layer
// has the same cap as a fresh sandbox's: a write past it fails inside that
// child only ("Disk quota exceeded"), the parent, its sibling and the gateway
// go on, and the host's file system (under the sandboxes' image) gives it no
// more than its cap. A snapshot that would take its team's snapshots past their budget is
// refused with 507 and leaves nothing; deleting one makes room. Needs root,
// criu, loop devices and btrfs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { criuSkipReason, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason() ||
  criuSkipReason() ||
  (!fs.existsSync('/dev/loop-control') ? 'no loop devices' : null) ||
  (!['/usr/sbin/mkfs.btrfs', '/sbin/mkfs.btrfs', '/usr/bin/mkfs.btrfs'].some((p) => fs.existsSync(p)) ? 'no mkfs.btrfs (btrfs-progs)' : null);
const opt = skip ? { skip } : {};
let gw, Sandbox;
before(async () => {
  if (skip) return;
  ({ Sandbox } = await loadSdk());
  gw = await startGateway({ extraArgs: ['--default-disk-mb', '20', '--snapshot-disk-mb', '24', '--disk-image-size', '512M'] });
});
after(async () => { await gw?.stop(); });

const MiB = 1 << 20;
const api = (p, init = {}) => fetch(`${gw.url}${p}`, {
  ...init, headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json', ...(init.headers || {}) },
});
const snapshotEntries = () => fs.readdirSync(path.join(gw.stateDir, 'sandboxes', '.snapshots')).filter((n) => !n.startsWith('.')).sort();
const hostFree = () => { const s = fs.statfsSync(gw.stateDir); return s.bavail * s.bsize; };

test(`[${sdkName}] a fork child has a fresh sandbox's disk cap: past it, ENOSPC inside that child only`, opt, async () => {
  const parent = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const kids = [];
  try {
    // The parent holds 8 MiB at the fork: shared with the children, charged
    // to the parent, not to them.
    await parent.commands.run('dd if=/dev/zero of=/home/user/base bs=1M count=8');
    kids.push(...await parent.fork({ count: 2, timeoutMs: 120_000 }));
    for (const k of kids) assert.ok(!(k instanceof Error), String(k));
    const [a, b] = kids;
    for (const k of kids) {
      const i = await (await api(`/sandboxes/${k.sandboxId}`)).json();
      assert.equal(i.diskSizeMB, 20, 'the same cap as a fresh sandbox');
    }
    execFileSync('sync');
    const free0 = hostFree();

    let err;
    try {
      await a.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=40');
    } catch (e) { err = e; }
    assert.ok(err, 'dd past the cap fails');
    assert.match(`${err.stderr ?? ''} ${err.message}`, /Disk quota exceeded|No space left/);
    const size = Number((await a.commands.run('stat -c %s /home/user/fill')).stdout.trim());
    assert.ok(size > 10 * MiB && size <= 20 * MiB, `the child wrote ${size} bytes`);
    assert.equal((await a.commands.run('echo alive')).stdout, 'alive\n', 'the full child still runs commands');
    // The host's file system holds the image: it gave the child at most its cap.
    execFileSync('sync');
    assert.ok(free0 - hostFree() < 28 * MiB, `the host's file system lost ${free0 - hostFree()} bytes to a 40 MiB dd`);

    // Its sibling and the parent have their own caps.
    await b.commands.run('dd if=/dev/zero of=/home/user/fill bs=1M count=15');
    assert.equal((await b.commands.run('stat -c %s /home/user/fill')).stdout.trim(), String(15 * MiB));
    await parent.commands.run('dd if=/dev/zero of=/home/user/more bs=1M count=8');
    const c = await Sandbox.create({ ...gw.opts });
    await c.kill();

    // The metrics show the child's own use against its cap.
    let m;
    for (let i = 0; i < 40 && !(m?.diskUsed > 10 * MiB); i++) {
      m = (await (await api(`/sandboxes/${a.sandboxId}/metrics`)).json()).at(-1);
      if (!(m?.diskUsed > 10 * MiB)) await sleep(250);
    }
    assert.ok(m.diskUsed > 10 * MiB && m.diskUsed <= 21 * MiB, `diskUsed ${m.diskUsed}`);
    assert.equal(m.diskTotal, 20 * MiB);
  } finally {
    for (const k of kids) if (!(k instanceof Error)) await k.kill();
    await parent.kill();
  }
});

test(`[${sdkName}] a team's snapshots keep at most --snapshot-disk-mb: one more is a 507 that leaves nothing`, opt, async () => {
  const src = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  try {
    await src.commands.run('dd if=/dev/zero of=/home/user/data bs=1M count=14');
    const first = await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ name: 'one' }) });
    assert.equal(first.status, 201, await first.clone().text());
    const one = await first.json();
    assert.ok(one.diskBytes >= 14 * MiB, `diskBytes ${one.diskBytes}`);
    const kept = snapshotEntries();

    // A second one would keep ~28 MiB in all: refused, and nothing of it stays.
    const second = await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ name: 'two' }) });
    assert.equal(second.status, 507, await second.clone().text());
    assert.match((await second.json()).message, /snapshot/i);
    for (let i = 0; i < 40 && snapshotEntries().length !== kept.length; i++) await sleep(50);
    assert.deepEqual(snapshotEntries(), kept);
    const listed = await (await api('/snapshots')).json();
    assert.deepEqual(listed.map((s) => s.snapshotID), [one.snapshotID]);
    assert.equal((await src.commands.run('echo alive')).stdout, 'alive\n', 'the source runs on');

    // A files-only snapshot is charged too (its files).
    const files = await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ memory: false }) });
    assert.equal(files.status, 507, await files.clone().text());

    // Deleting the first makes room for the next.
    assert.equal((await api(`/snapshots/${one.snapshotID}`, { method: 'DELETE' })).status, 204);
    const third = await api(`/sandboxes/${src.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({ name: 'three' }) });
    assert.equal(third.status, 201, await third.clone().text());
    const three = await third.json();
    assert.equal((await api(`/snapshots/${three.snapshotID}`, { method: 'DELETE' })).status, 204);
  } finally {
    await src.kill();
  }
});

test(`[${sdkName}] two snapshots taken at once cannot both pass the team's budget`, opt, async () => {
  // Two sources of 14 MiB each, snapshotted at the same moment: each alone
  // fits the 24 MiB budget, both together do not. Exactly one is kept.
  const srcs = await Promise.all([0, 1].map(() => Sandbox.create({ ...gw.opts, timeoutMs: 600_000 })));
  try {
    await Promise.all(srcs.map((s) => s.commands.run('dd if=/dev/zero of=/home/user/data bs=1M count=14')));
    const before = snapshotEntries();
    const answers = await Promise.all(srcs.map((s) =>
      api(`/sandboxes/${s.sandboxId}/snapshots`, { method: 'POST', body: JSON.stringify({}) })));
    const statuses = answers.map((a) => a.status).sort();
    const bodies = await Promise.all(answers.map((a) => a.json()));
    assert.deepEqual(statuses, [201, 507], JSON.stringify(bodies));
    const kept = bodies.find((b) => b.snapshotID);
    assert.match(bodies.find((b) => !b.snapshotID).message, /--snapshot-disk-mb/);
    const listed = await (await api('/snapshots')).json();
    assert.deepEqual(listed.map((s) => s.snapshotID), [kept.snapshotID]);
    assert.equal((await api(`/snapshots/${kept.snapshotID}`, { method: 'DELETE' })).status, 204);
    for (let i = 0; i < 40 && snapshotEntries().length !== before.length; i++) await sleep(50);
    assert.deepEqual(snapshotEntries(), before, 'nothing of either is left');
  } finally {
    await Promise.all(srcs.map((s) => s.kill()));
  }
});
