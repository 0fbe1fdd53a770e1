// soak: many create → commands.run → kill cycles through the real e2b SDK,
// then an account of everything the gateway should have given back.
//
//   node bench/soak.mjs [--cycles 10000] [--concurrency 4] [--uid-slots 32] [--spares 32]
//                       [--settle-seconds 120] [--fd-slack 4]
//
// Starts its own coppiced (build/coppiced, or COPPICE_BUILD_DIR) on loopback
// with a fresh state dir. After a short warm-up it takes a baseline of the
// host resources the gateway holds, runs the cycles (`--concurrency` at a
// time), then holds every uid slot at once (a leaked slot makes one of those
// creates fail), waits for the gateway to settle (trash emptied, spares
// refilled, fd count steady) and compares:
//   mounts      host mountinfo entries under the state dir, and any naming a sandbox
//   cgroups     sandbox cgroups under the gateway's parent cgroups (v1 controllers
//               and cgroup2), spare ones counted apart
//   netns       network namespaces the gateway accounts for (its fds, its descendants'
//               and sandbox processes' namespaces, nsfs mounts under the state dir)
//   fds         the gateway's open fds by kind, against the baseline (+ --fd-slack);
//               connections the SDK keeps open to its port are shown, not counted
//   uid slots   all held at once at the end; processes still running in the range
//   state dir   entries in sandboxes/ (the trash once emptied), ns/ registry records
//   processes   in the parent cgroups or under the gateway's uid range
// and, after a SIGTERM, that the gateway removed its parent cgroups and its
// uid-range entry. Prints a table; exits 1 on any leak or failed cycle, 77
// when it cannot run here (needs root and a build).
import fs from 'node:fs';
import path from 'node:path';
import {
  startGateway, gatewaySkipReason, loadSdk, sleep, cgroupParentDirs, uidRangeEntry, TEST_API_KEY,
} from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const cycles = Number(opt('--cycles', '10000'));
const concurrency = Number(opt('--concurrency', '4'));
const uidSlots = Number(opt('--uid-slots', '32'));
const spares = Number(opt('--spares', '32'));
const settleSeconds = Number(opt('--settle-seconds', '120'));
const fdSlack = Number(opt('--fd-slack', '4'));
for (const [k, v] of Object.entries({ cycles, concurrency, uidSlots, spares, settleSeconds, fdSlack })) {
  if (!Number.isInteger(v) || v < 0 || (k === 'concurrency' && v < 1)) {
    console.error(`soak: --${k} must be a non-negative integer (concurrency at least 1)`);
    process.exit(2);
  }
}
if (concurrency > uidSlots) {
  console.error(`soak: --concurrency ${concurrency} is more than --uid-slots ${uidSlots}`);
  process.exit(2);
}
const why = gatewaySkipReason();
if (why) {
  console.error(`soak: cannot run: ${why}`);
  process.exit(77);
}

const { Sandbox } = await loadSdk();
const H = { 'X-API-KEY': TEST_API_KEY };
const gw = await startGateway({ extraArgs: ['--uid-slots', String(uidSlots), '--spares', String(spares)] });
const stateDir = fs.realpathSync(gw.stateDir);
const parents = cgroupParentDirs(stateDir);
const uidRange = uidRangeEntry(stateDir);
const ids = new Set();  // every sandbox id the soak saw

// ---- what the host holds ------------------------------------------------------------------

const readDir = (d) => { try { return fs.readdirSync(d); } catch { return []; } };
const readLink = (p) => { try { return fs.readlinkSync(p); } catch { return null; } };

function mountinfo() {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean);
}
function mountsUnderState() {
  return mountinfo().filter((l) => {
    const mp = l.split(' ')[4];
    return mp === stateDir || mp.startsWith(stateDir + '/');
  });
}
// Mount lines that name a sandbox the soak created (its id is 20 chars of [a-z0-9]).
function mountsNamingSandboxes() {
  return mountinfo().filter((l) => {
    for (const m of l.matchAll(/[a-z0-9]{12,}/g)) if (ids.has(m[0])) return true;
    return false;
  });
}
// Child cgroups of the gateway's parents, all hierarchies.
function cgroups() {
  const sandbox = [], spare = [];
  for (const p of parents) {
    for (const name of readDir(p)) {
      let st;
      try { st = fs.statSync(path.join(p, name)); } catch { continue; }
      if (!st.isDirectory()) continue;
      (name.startsWith('spare-') ? spare : sandbox).push(path.join(p, name));
    }
  }
  return { sandbox, spare };
}
// Pids in the parent cgroups (any depth).
function cgroupPids() {
  const pids = new Set();
  const walk = (d, depth) => {
    for (const pid of (() => { try { return fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8'); } catch { return ''; } })()
      .split('\n').filter(Boolean)) pids.add(Number(pid));
    if (depth > 4) return;
    for (const n of readDir(d)) {
      const c = path.join(d, n);
      try { if (fs.statSync(c).isDirectory()) walk(c, depth + 1); } catch {}
    }
  };
  for (const p of parents) walk(p, 0);
  return pids;
}
const procPids = () => readDir('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
// Pids whose real uid is in the gateway's sandbox uid range.
function rangePids() {
  if (!uidRange.range) return [];
  const { base, end } = uidRange.range;
  const out = [];
  for (const pid of procPids()) {
    let s;
    try { s = fs.readFileSync(`/proc/${pid}/status`, 'utf8'); } catch { continue; }
    const m = s.match(/^Uid:\s+(\d+)/m);
    if (m && Number(m[1]) >= base && Number(m[1]) < end) out.push(pid);
  }
  return out;
}
// Pids of the gateway's descendants.
function descendants() {
  const children = new Map();
  for (const pid of procPids()) {
    let st;
    try { st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { continue; }
    const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  const out = [];
  const todo = [...(children.get(gw.proc.pid) || [])];
  while (todo.length) {
    const p = todo.pop();
    out.push(p);
    todo.push(...(children.get(p) || []));
  }
  return out;
}
// Network namespaces the gateway accounts for: held open by its fds (spares),
// entered by its descendants or by processes in its uid range or cgroups,
// or bind-mounted (nsfs) under its state dir. Other engineers' tests make
// and drop namespaces on the same host, so a host-wide count would be noise.
function netns() {
  const set = new Set();
  const pids = new Set([gw.proc.pid, ...descendants(), ...rangePids(), ...cgroupPids()]);
  for (const pid of pids) {
    const l = pid === gw.proc.pid ? null : readLink(`/proc/${pid}/ns/net`);
    if (l) set.add(l);
    for (const fd of readDir(`/proc/${pid}/fd`)) {
      const t = readLink(`/proc/${pid}/fd/${fd}`);
      if (t && t.startsWith('net:[')) set.add(t);
    }
  }
  for (const l of mountsUnderState()) {
    const m = l.match(/ (net:\[\d+\]) /);
    if (m) set.add(m[1]);
  }
  return set.size;
}
// Socket inodes by what they are: connections a client opened to the
// gateway's port (the client's keep-alive pool decides how long those stay,
// so they are counted apart from the gateway's own), other TCP, unix.
function socketKinds() {
  const kinds = new Map();
  const port = gw.port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const client = c[1].endsWith(':' + port) && c[3] !== '0A';  // not the listener
      kinds.set(c[9], client ? 'client-conn' : 'tcp');
    }
  }
  try {
    for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length >= 7) kinds.set(c[6], 'unix');
    }
  } catch {}
  return kinds;
}
// The gateway's open fds by kind (file, unix, tcp, pipe, anon_inode, net,
// user, ...); `own` leaves out client connections.
function gatewayFds() {
  const kinds = {};
  let total = 0;
  const sockets = socketKinds();
  for (const fd of readDir(`/proc/${gw.proc.pid}/fd`)) {
    const t = readLink(`/proc/${gw.proc.pid}/fd/${fd}`);
    if (t === null) continue;
    total++;
    let kind = t.startsWith('/') ? 'file' : t.replace(/[:[].*$/, '') || t;
    if (kind === 'socket') kind = sockets.get(t.slice(8, -1)) || 'socket';
    kinds[kind] = (kinds[kind] || 0) + 1;
  }
  return { total, own: total - (kinds['client-conn'] || 0), kinds };
}
function stateEntries() {
  const sb = path.join(stateDir, 'sandboxes');
  return {
    sandboxes: readDir(sb).filter((n) => n !== '.trash' && n !== '.spare'),
    trash: readDir(path.join(sb, '.trash')),
    registry: readDir(path.join(stateDir, 'ns')),
  };
}
async function metric(name) {
  const r = await fetch(`${gw.url}/metrics`, { headers: H });
  const m = (await r.text()).match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm'));
  return m ? Number(m[1]) : null;
}
async function apiSandboxes() {
  const r = await fetch(`${gw.url}/v2/sandboxes?state=running,paused&limit=1000`, { headers: H });
  return r.ok ? (await r.json()).length : -1;
}

function snapshot() {
  const cg = cgroups();
  const st = stateEntries();
  return {
    mountsUnderState: mountsUnderState().length,
    mountsNamingSandboxes: mountsNamingSandboxes().length,
    sandboxCgroups: cg.sandbox.length,
    spareCgroups: cg.spare.length,
    netns: netns(),
    fds: gatewayFds(),
    cgroupPids: cgroupPids().size,
    rangePids: rangePids().length,
    sandboxDirs: st.sandboxes.length,
    trash: st.trash.length,
    registry: st.registry.length,
  };
}

// Waits until the gateway is idle: no sandbox, trash empty, spares refilled,
// the fd count unchanged over two seconds.
async function settle(label) {
  const until = Date.now() + settleSeconds * 1000;
  let last = -1, steady = 0;
  for (;;) {
    const ready = await metric('coppice_host_spares_ready');
    const fds = gatewayFds().own;
    const st = stateEntries();
    const quiet = (await apiSandboxes()) === 0 && st.trash.length === 0 && (ready === null || ready >= spares);
    steady = quiet && fds === last ? steady + 1 : 0;
    last = fds;
    if (steady >= 4) return true;
    if (Date.now() > until) {
      console.error(`soak: ${label}: not settled after ${settleSeconds} s (spares ready ${ready}, trash ${st.trash.length})`);
      return false;
    }
    await sleep(500);
  }
}

// ---- the cycles ---------------------------------------------------------------------------

const failures = [];
async function cycle(i) {
  let sbx;
  try {
    sbx = await Sandbox.create({ ...gw.opts });
    ids.add(sbx.sandboxId);
    const r = await sbx.commands.run(`echo soak-${i}`);
    if (r.stdout !== `soak-${i}\n`) throw new Error(`commands.run gave ${JSON.stringify(r.stdout)}`);
  } catch (e) {
    failures.push(`cycle ${i}: ${e.message}`);
  } finally {
    if (sbx) {
      try { await sbx.kill(); } catch (e) { failures.push(`cycle ${i}: kill: ${e.message}`); }
    }
  }
}
async function runCycles(from, n) {
  let next = from;
  const end = from + n;
  const t0 = performance.now();
  let reported = t0;
  const worker = async () => {
    while (next < end) {
      const i = next++;
      await cycle(i);
      const now = performance.now();
      if (now - reported > 15000) {
        reported = now;
        const done = next - from;
        console.log(`soak: ${done}/${n} cycles, ${(done / ((now - t0) / 1000)).toFixed(1)}/s, ` +
          `${failures.length} failed, gateway fds ${gatewayFds().own}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return (performance.now() - t0) / 1000;
}

let exitCode = 0;
const rows = [];
const row = (what, before, after, leak, note = '') => {
  rows.push({ what, before, after, leak, note });
  if (leak) exitCode = 1;
};
try {
  const warm = Math.max(10, 2 * concurrency);
  await runCycles(0, warm);
  await settle('baseline');
  const before = snapshot();

  console.log(`soak: ${cycles} cycles at concurrency ${concurrency} (uid slots ${uidSlots}, spares ${spares}), ` +
    `state dir ${stateDir}`);
  const seconds = await runCycles(warm, cycles);
  console.log(`soak: ${cycles} cycles in ${seconds.toFixed(1)} s (${(cycles / seconds).toFixed(1)}/s), ` +
    `${failures.length} failed`);

  // Every uid slot at once: a slot that was never given back makes one fail.
  const held = await Promise.allSettled(Array.from({ length: uidSlots }, () => Sandbox.create({ ...gw.opts })));
  const slotFailures = held.filter((h) => h.status === 'rejected').map((h) => h.reason.message);
  for (const h of held) if (h.status === 'fulfilled') ids.add(h.value.sandboxId);
  await Promise.allSettled(held.filter((h) => h.status === 'fulfilled').map((h) => h.value.kill()));

  const settled = await settle('end');
  const after = snapshot();
  const mountLines = mountsNamingSandboxes();
  const cg = cgroups();

  row('mounts under the state dir', before.mountsUnderState, after.mountsUnderState,
    after.mountsUnderState > before.mountsUnderState);
  row('mounts naming a sandbox', before.mountsNamingSandboxes, after.mountsNamingSandboxes,
    after.mountsNamingSandboxes > 0, mountLines.slice(0, 2).join(' | '));
  row('sandbox cgroups', before.sandboxCgroups, after.sandboxCgroups, after.sandboxCgroups > 0,
    cg.sandbox.slice(0, 2).join(' '));
  row('spare cgroups', before.spareCgroups, after.spareCgroups, after.spareCgroups > before.spareCgroups);
  row('network namespaces', before.netns, after.netns, after.netns > before.netns);
  const kinds = [...new Set([...Object.keys(before.fds.kinds), ...Object.keys(after.fds.kinds)])];
  row('gateway fds (client connections aside)', before.fds.own, after.fds.own, after.fds.own > before.fds.own + fdSlack,
    kinds.map((k) => [k, after.fds.kinds[k] || 0]).map(([k, v]) => `${k} ${before.fds.kinds[k] || 0}->${v}`).join(', '));
  row('uid slots free at the end', uidSlots, uidSlots - slotFailures.length, slotFailures.length > 0,
    slotFailures[0] || '');
  row('processes in the uid range', before.rangePids, after.rangePids, after.rangePids > 0);
  row('processes in the parent cgroups', before.cgroupPids, after.cgroupPids, after.cgroupPids > 0);
  row('sandboxes/ entries', before.sandboxDirs, after.sandboxDirs, after.sandboxDirs > 0,
    stateEntries().sandboxes.slice(0, 2).join(' '));
  row('sandboxes/.trash entries', before.trash, after.trash, after.trash > 0);
  row('ns/ registry records', before.registry, after.registry, after.registry > 0);
  row('sandboxes the API lists', 0, await apiSandboxes(), (await apiSandboxes()) !== 0);
  if (!settled) row('gateway settled', '', 'no', true, `within ${settleSeconds} s`);

  // A clean stop gives back the parent cgroups and the uid-range entry.
  gw.proc.kill('SIGTERM');
  await new Promise((r) => (gw.proc.exitCode !== null ? r() : gw.proc.on('exit', r)));
  const leftParents = parents.filter((p) => fs.existsSync(p));
  row('parent cgroups after stop', parents.length, leftParents.length, leftParents.length > 0, leftParents[0] || '');
  row('uid-range entry after stop', 1, fs.existsSync(uidRange.file) ? 1 : 0, fs.existsSync(uidRange.file));
  row('mounts under the state dir after stop', before.mountsUnderState, mountsUnderState().length,
    mountsUnderState().length > before.mountsUnderState);
  if (failures.length) {
    row('failed cycles', 0, failures.length, true, failures[0]);
    exitCode = 1;
  }
} finally {
  await gw.stop();
}

const w = Math.max(...rows.map((r) => r.what.length));
console.log(`\n${'resource'.padEnd(w)}  ${'before'.padStart(7)}  ${'after'.padStart(7)}  result`);
for (const r of rows) {
  console.log(`${r.what.padEnd(w)}  ${String(r.before).padStart(7)}  ${String(r.after).padStart(7)}  ` +
    `${r.leak ? 'LEAK' : 'ok'}${r.note ? '  ' + r.note : ''}`);
}
for (const f of failures.slice(0, 10)) console.log(`failed: ${f}`);
console.log(exitCode ? '\nsoak: leaks or failures found' : '\nsoak: nothing leaked');
process.exit(exitCode);
