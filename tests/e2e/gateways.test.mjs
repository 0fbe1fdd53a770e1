// Several gateways on one host: each hands its sandboxes host uids of its
// own (a host-wide registry under /run/coppice refuses overlaps with running
// gateways and ignores dead ones), and a gateway that stops leaves no parent
// cgroup and no registry entry behind when no sandbox is left. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startGateway, gatewaySkipReason, gatewayBin, loadSdk, sdkName, freePort, sleep, cgroupParentDirs, removeCgroupParents,
  uidRangeEntry, uidRangeDir, removeStateDir,
} from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

// Kills, by pid, the processes of any sandbox left in the gateway's parent
// cgroups (a test that failed half-way), and removes those cgroups.
async function killLeftovers(dir) {
  for (const parent of cgroupParentDirs(dir)) {
    if (!fs.existsSync(parent)) continue;
    for (const child of fs.readdirSync(parent, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      const cg = path.join(parent, child.name);
      for (let i = 0; i < 100; ++i) {
        const pids = fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
        if (!pids.length) break;
        for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch {} }
        await sleep(20);
      }
      try { fs.rmdirSync(cg); } catch {}
    }
  }
}

// A state dir of the test's own, removed (with the gateway's leftovers) at the end.
function stateDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `coppice-${prefix}-`));
  cleanups.push(async () => {
    const { file } = uidRangeEntry(dir);
    fs.rmSync(file, { force: true });
    await killLeftovers(dir);
    removeCgroupParents(dir);
    removeStateDir(dir);
  });
  return dir;
}

async function started(args) {
  const gw = await startGateway(args);
  cleanups.push(gw.stop);
  return gw;
}

// Runs coppiced expecting it to refuse to start: its exit code and stderr.
function refusedStart(args) {
  return new Promise(async (resolve, reject) => {
    const port = await freePort();
    const proc = spawn(gatewayBin, ['--listen', `127.0.0.1:${port}`, '--log-level', 'warn', '--network', 'off', ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('coppiced did not exit')); }, 30_000);
    proc.on('exit', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
}

// A base for `slots` slots that no registered gateway, live or dead, uses.
function unusedBase(slots) {
  const taken = [];
  for (const f of fs.existsSync(uidRangeDir) ? fs.readdirSync(uidRangeDir) : []) {
    if (!f.endsWith('.range')) continue;
    const [base, n] = fs.readFileSync(path.join(uidRangeDir, f), 'utf8').split(' ').map(Number);
    taken.push([base, base + n * 65536]);
  }
  for (let base = 2_000_000_000; base + slots * 65536 < 0xfffffffe; base += slots * 65536) {
    if (taken.every(([b, e]) => base + slots * 65536 <= b || e <= base)) return base;
  }
  throw new Error('no unused uid range on this host');
}

const sandboxHostRoot = async (sbx) => Number((await sbx.commands.run('cat /proc/self/uid_map')).stdout.trim().split(/\s+/)[1]);

test(`[${sdkName}] two gateways with different state dirs get disjoint uid ranges, and their sandboxes use them`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const a = await started({ stateDir: stateDir('gw-a') });
  const b = await started({ stateDir: stateDir('gw-b') });
  const ra = uidRangeEntry(a.stateDir).range, rb = uidRangeEntry(b.stateDir).range;
  assert.ok(ra && rb, 'both gateways are registered');
  assert.equal(ra.pid, a.proc.pid);
  assert.equal(rb.pid, b.proc.pid);
  assert.equal(ra.slots, 256);
  assert.ok(ra.end <= rb.base || rb.end <= ra.base, `${JSON.stringify(ra)} and ${JSON.stringify(rb)} overlap`);
  assert.ok(ra.base >= 1_000_000 && rb.base >= 1_000_000);
  const sa = await Sandbox.create({ ...a.opts });
  const sb = await Sandbox.create({ ...b.opts });
  const ha = await sandboxHostRoot(sa), hb = await sandboxHostRoot(sb);
  assert.ok(ha >= ra.base && ha + 65536 <= ra.end, `sandbox of a at ${ha}`);
  assert.ok(hb >= rb.base && hb + 65536 <= rb.end, `sandbox of b at ${hb}`);
  await sa.kill();
  await sb.kill();
});

test(`[${sdkName}] a gateway configured to overlap a running one is refused at start with a one-line error`, opt, async () => {
  const a = await started({ stateDir: stateDir('gw-a') });
  const ra = uidRangeEntry(a.stateDir).range;
  const other = stateDir('gw-overlap');
  const r = await refusedStart(['--state-dir', other, '--uid-base', String(ra.base + 10 * 65536), '--uid-slots', '16']);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /overlaps/);
  assert.ok(lines[0].includes(fs.realpathSync(a.stateDir)), 'names the gateway it collides with');
  assert.equal(uidRangeEntry(other).range, null, 'the refused gateway registered nothing');
  assert.deepEqual(cgroupParentDirs(other).filter((d) => fs.existsSync(d)), [], 'and made no cgroup');
  // The running one is untouched.
  assert.equal((await fetch(`${a.url}/health`)).ok, true);
  // Next to it, the same request fits.
  const fits = await started({ stateDir: other, extraArgs: ['--uid-base', String(ra.end), '--uid-slots', '16'] });
  assert.equal(uidRangeEntry(fits.stateDir).range.base, ra.end);
});

test(`[${sdkName}] a dead gateway's entry does not block another gateway`, opt, async () => {
  const base = String(unusedBase(256));
  const dead = await startGateway({ stateDir: stateDir('gw-dead'), extraArgs: ['--uid-base', base, '--spares', '0'] });
  await dead.kill9();
  const stale = uidRangeEntry(dead.stateDir);
  assert.equal(stale.range?.base, Number(base), 'the dead gateway\'s entry is still there');
  const b = await started({ stateDir: stateDir('gw-after'), extraArgs: ['--uid-base', base] });
  assert.equal(uidRangeEntry(b.stateDir).range.base, Number(base));
  const { Sandbox } = await loadSdk();
  const s = await Sandbox.create({ ...b.opts });
  assert.equal(await sandboxHostRoot(s), Number(base));
  await s.kill();
});

test(`[${sdkName}] a gateway stopped with no sandbox left leaves no parent cgroup and no uid range entry`, opt, async () => {
  const dir = stateDir('gw-exit');
  const gw = await started({ stateDir: dir });
  const { Sandbox } = await loadSdk();
  const s = await Sandbox.create({ ...gw.opts });
  assert.ok(cgroupParentDirs(dir).some((d) => fs.existsSync(path.join(d, s.sandboxId))), 'the sandbox is under the parent');
  await s.kill();
  assert.ok(cgroupParentDirs(dir).some((d) => fs.existsSync(d)), 'the parent exists while the gateway runs');
  const entry = uidRangeEntry(dir);
  gw.proc.kill('SIGTERM');
  await new Promise((r) => (gw.proc.exitCode !== null ? r() : gw.proc.on('exit', r)));
  assert.deepEqual(cgroupParentDirs(dir).filter((d) => fs.existsSync(d)), [], 'no parent cgroup under any hierarchy');
  assert.ok(entry.range, 'the gateway was registered');
  assert.equal(fs.existsSync(entry.file), false, 'and its entry is gone');
});

test(`[${sdkName}] a gateway stopped with a sandbox running keeps its parent and range; the next start adopts it`, opt, async () => {
  const dir = stateDir('gw-keep');
  let gw = await startGateway({ stateDir: dir });
  cleanups.push(gw.stop);
  const { Sandbox } = await loadSdk();
  const s = await Sandbox.create({ ...gw.opts, timeoutMs: 120_000 });
  const range = uidRangeEntry(dir).range;
  gw.proc.kill('SIGTERM');
  await new Promise((r) => (gw.proc.exitCode !== null ? r() : gw.proc.on('exit', r)));
  assert.ok(cgroupParentDirs(dir).some((d) => fs.existsSync(path.join(d, s.sandboxId))), 'its cgroup is kept');
  assert.equal(uidRangeEntry(dir).range?.base, range.base, 'its range stays registered');
  gw = await started({ stateDir: dir });
  assert.equal(uidRangeEntry(dir).range.base, range.base, 'the next start takes the same range');
  const again = await Sandbox.connect(s.sandboxId, gw.opts);
  assert.equal((await again.commands.run('echo adopted')).stdout, 'adopted\n');
  await again.kill();
});
