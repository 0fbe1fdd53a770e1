// compare: Coppice side by side with runc, crun and bubblewrap on this
// machine, in one run (benchmarks.md, issue 5).
//
//   node bench/compare.mjs [--quick] [--out DIR] [--density N]
//                          [--no-coppice] [--no-peers] [--no-density]
//   node bench/compare.mjs --render DIR/compare.json [--out DIR]   (redraw the chart only)
//
// Needs root (exit 77 otherwise). Starts its own coppiced from
// $COPPICE_BUILD_DIR (default build/) through the e2e harness, loopback only.
// Clocks (all client-side, performance.now() around the whole operation):
//   coppice create        POST /v2/sandboxes sent -> whole 201 received
//   coppice create+exec   create sent -> Process/Start of /bin/true through the
//                         proxy has returned its end event (the sandbox is
//                         killed afterwards, outside the clock)
//   coppice exec          Process/Start of /bin/true in a running sandbox
//   runc/crun create+exec `<rt> run` of a fresh container whose process is
//                         /bin/true: spawn -> exit (create, start, wait and
//                         delete are all inside the one command)
//   bwrap create+exec     `bwrap ... /bin/true`: spawn -> exit
//   runc/crun exec        `<rt> exec <id> /bin/true` in a container running
//                         `sleep infinity`: spawn -> exit
//   bwrap exec            bwrap has no exec: `nsenter --all -t <pid 1> -r -w
//                         /bin/true` into a bwrap sandbox running sleep
//   floor                 node spawn of /bin/true (no container): the launch
//                         cost every peer clock above includes
// Density: cold idle sandboxes through the API until --density N (5000; 200
// with --quick) or the first failure; host MemAvailable (after drop_caches)
// before - after, / count. Raises kernel.pid_max, fs.inotify.max_user_instances
// for the run and restores them; the gateway gets RLIMIT_NOFILE = the hard
// limit. Everything it makes (sandboxes, containers, cgroups, temp dirs,
// sysctls) is undone at the end, on failure and on Ctrl-C.
// Writes <out>/compare.json (every BenchmarkRun, ratios, host limits),
// <out>/compare.svg (p50 bars, p95/p99 whiskers) and, when rsvg-convert is
// installed, <out>/compare.png. Never asserts a timing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { startGateway, TEST_API_KEY, gatewaySkipReason, buildDir } from '../tests/e2e/lib/harness.mjs';
import { renderSvg } from './compare_chart.mjs';
import { pct, summary, hostInfo } from './stats.mjs';

const argv = process.argv.slice(2);
const flag = (f) => argv.includes(f);
const opt = (f, d) => (argv.includes(f) ? argv[argv.indexOf(f) + 1] : d);
const quick = flag('--quick');
const outDir = path.resolve(opt('--out', path.join(import.meta.dirname, 'results')));
const densityTarget = Number(opt('--density', quick ? 200 : 5000));
const doCoppice = !flag('--no-coppice'), doPeers = !flag('--no-peers'), doDensity = !flag('--no-density') && densityTarget > 0;
const COMMAND = `node bench/compare.mjs ${argv.join(' ')}`.trim();

// --render FILE: redraw compare.svg (and .png) in --out from a compare.json, measuring nothing.
if (flag('--render')) {
  const j = JSON.parse(fs.readFileSync(opt('--render'), 'utf8'));
  fs.mkdirSync(outDir, { recursive: true });
  writeChart(j.runs, j.meta);
  process.exit(0);
}
function writeChart(runs, meta) {
  const h = meta.host;
  if (!runs.some((r) => r.metric !== 'density' && r.summary && r.summary.count)) return; // a density-only run has no bars
  const svg = renderSvg(runs.filter((r) => r.metric !== 'density'), {
    subtitle: `${h.cpuCount}× ${h.cpuModel || '?'}, ${h.memGB} GiB, kernel ${h.kernel}; ${meta.startedAt.slice(0, 16)}Z; ${meta.quick ? '--quick, ' : ''}load average ${meta.loadStart[0]} → ${meta.loadEnd[0]} (shared machine)`,
  });
  fs.writeFileSync(path.join(outDir, 'compare.svg'), svg);
  try { execFileSync('rsvg-convert', ['-b', 'white', '-o', path.join(outDir, 'compare.png'), path.join(outDir, 'compare.svg')], { stdio: 'ignore' }); } catch {}
}

if (!process.getuid || process.getuid() !== 0) {
  console.error('compare: cannot run: needs root (namespaces, cgroups, overlayfs, runc/crun)');
  process.exit(77);
}
const why = gatewaySkipReason();
if (why) {
  console.error(`compare: cannot run: ${why} (build first, or set COPPICE_BUILD_DIR)`);
  process.exit(77);
}

// ---------------------------------------------------------------- helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const readFile = (f) => { try { return fs.readFileSync(f, 'utf8'); } catch { return ''; } };
const HOST = hostInfo();
const meminfo = (k) => Number((new RegExp(`${k}:\\s+(\\d+)`).exec(readFile('/proc/meminfo')) || [])[1] || 0) * 1024;
const memAvailable = () => {
  try { fs.writeFileSync('/proc/sys/vm/drop_caches', '3'); } catch {}
  return meminfo('MemAvailable');
};
const sysctlPath = (k) => `/proc/sys/${k.replace(/\./g, '/')}`;
const getSysctl = (k) => readFile(sysctlPath(k)).trim();
const which = (b) => { try { return execFileSync('sh', ['-c', `command -v ${b}`]).toString().trim() || null; } catch { return null; } };
const version = (b, a = ['--version']) => { try { return execFileSync(b, a, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n')[0].trim(); } catch { return '?'; } };
const load = () => os.loadavg().map((x) => +x.toFixed(2));
const cpuBusy = () => {
  const f = readFile('/proc/stat').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  return { idle, total: f.reduce((a, b) => a + b, 0), steal: f[7] || 0 };
};

// Cleanup actions, run last-in first-out once, also on Ctrl-C / SIGTERM.
const cleanups = [];
let cleaning = null;
function cleanupAll() {
  if (!cleaning) {
    cleaning = (async () => {
      while (cleanups.length) {
        const f = cleanups.pop();
        try { await f(); } catch (e) { console.error(`compare: cleanup: ${e.message || e}`); }
      }
    })();
  }
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    console.error(`\ncompare: ${sig}: cleaning up`);
    await cleanupAll();
    process.exit(130);
  });
}

// Runs fn(worker, i) n times from `conc` workers; a failure is counted, never dropped.
async function run(conc, n, fn) {
  const samples = [], errors = [];
  let failures = 0, next = 0;
  await Promise.all(Array.from({ length: conc }, async (_, w) => {
    while (next < n) {
      const i = next++;
      const t = performance.now();
      try { await fn(w, i); samples.push(performance.now() - t); } catch (e) {
        failures++;
        if (errors.length < 3) errors.push(String(e.message || e).slice(0, 300));
      }
    }
  }));
  return { samples, failures, errors };
}

const results = [];
const notes = [];
function record(system, label, metric, concurrency, r, extra = {}) {
  const config = `${label}`;
  const out = { config, system, label, host: HOST, metric, concurrency, samples: r.samples.map((x) => +x.toFixed(3)),
    summary: summary(r.samples, r.failures), ...(r.errors && r.errors.length ? { errors: r.errors } : {}), ...extra,
    command: COMMAND, runAt: new Date().toISOString() };
  results.push(out);
  const s = out.summary;
  console.error(`  ${label.padEnd(46)} c=${String(concurrency).padStart(2)} n=${s.count} fail=${s.failures} p50=${s.p50.toFixed(2)} p95=${s.p95.toFixed(2)} p99=${s.p99.toFixed(2)} ms  load=${out.load ? out.load.join('/') : ''}`);
  if (r.errors && r.errors.length) console.error(`    first errors: ${r.errors.join(' | ')}`);
  return out;
}
// Wraps a measurement with the load average and the CPU time the rest of the machine used.
async function measured(fn) {
  const l0 = load(), c0 = cpuBusy();
  const r = await fn();
  const c1 = cpuBusy();
  const busy = 1 - (c1.idle - c0.idle) / Math.max(1, c1.total - c0.total);
  return { r, extra: { load: load(), loadBefore: l0, hostCpuBusy: +busy.toFixed(3) } };
}

const Ns = quick ? { 1: 40, 10: 60, 50: 100 } : { 1: 200, 10: 200, 50: 500 };
const CONCS = [1, 10, 50];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-compare-'));
fs.chmodSync(tmp, 0o755); // the peers' user namespaces (mapped host uids) must reach the rootfs
cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
const RUNID = `cmp${process.pid}`;

// ---------------------------------------------------------------- coppice
function envelope(obj) {
  const body = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

class Gateway {
  constructor(gw) {
    this.gw = gw; this.url = gw.url; this.made = new Set();
    this.H = { 'X-API-Key': TEST_API_KEY, 'content-type': 'application/json' };
  }
  async create() {
    const r = await fetch(`${this.url}/v2/sandboxes`, { method: 'POST', headers: this.H, body: '{"templateID":"base","timeout":3600}' });
    const text = await r.text();
    if (r.status !== 201) throw new Error(`create: ${r.status} ${text.slice(0, 300)}`);
    const j = JSON.parse(text);
    this.made.add(j.sandboxID);
    return j;
  }
  async exec(sbx) {
    const r = await fetch(`${this.url}/process.Process/Start`, { method: 'POST', body: envelope({ process: { cmd: '/bin/true' }, stdin: false }),
      headers: { 'content-type': 'application/connect+json', 'E2b-Sandbox-Id': sbx.sandboxID, 'X-Access-Token': sbx.envdAccessToken } });
    const b = Buffer.from(await r.arrayBuffer());
    if (!b.includes('exit status 0')) throw new Error(`exec: ${r.status} ${b.toString().slice(0, 200)}`);
  }
  async kill(id) {
    await fetch(`${this.url}/sandboxes/${id}`, { method: 'DELETE', headers: this.H });
    this.made.delete(id);
  }
  async killAll(conc = 16) {
    const ids = [...this.made];
    let next = 0;
    await Promise.all(Array.from({ length: conc }, async () => {
      while (next < ids.length) {
        const id = ids[next++];
        try { await this.kill(id); } catch {}
      }
    }));
  }
  async metrics() {
    try {
      const r = await fetch(`${this.url}/metrics`);
      return r.ok ? parseProm(await r.text()) : null;
    } catch { return null; }
  }
  async stop() {
    await this.killAll();
    // Sandboxes the gateway knows that we lost track of (e.g. after a client timeout).
    try {
      for (let round = 0; round < 10; round++) {
        const r = await fetch(`${this.url}/v2/sandboxes?state=running,paused&limit=1000`, { headers: this.H });
        const list = r.ok ? await r.json() : [];
        if (!list.length) break;
        for (const s of list) this.made.add(s.sandboxID);
        await this.killAll();
      }
    } catch {}
    await this.gw.stop();
  }
}

async function launchGateway(extraArgs = []) {
  const gw = new Gateway(await startGateway({ extraArgs }));
  gw.cleanup = () => gw.stop();
  cleanups.push(gw.cleanup);
  return gw;
}
async function stopGateway(gw) {
  await gw.stop();
  const i = cleanups.indexOf(gw.cleanup);
  if (i >= 0) cleanups.splice(i, 1);
}

// Prometheus text: { 'name{labels}': value }.
function parseProm(text) {
  const m = {};
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const sp = line.lastIndexOf(' ');
    m[line.slice(0, sp)] = Number(line.slice(sp + 1));
  }
  return m;
}
// Server-side create time between two /metrics snapshots, from the
// coppice_create_seconds histogram (label pool=hit|miss): count, average
// and bucket-interpolated p50/p99.
function serverCreate(before, after, pool) {
  if (!before || !after) return null;
  const key = (suffix, extra = '') => `coppice_create_seconds_${suffix}{pool="${pool}"${extra}}`;
  const d = (k) => (after[k] || 0) - (before[k] || 0);
  const count = d(key('count'));
  if (!count) return { pool, count: 0 };
  const buckets = Object.keys(after).filter((k) => k.startsWith('coppice_create_seconds_bucket{') && k.includes(`pool="${pool}"`))
    .map((k) => ({ le: /le="([^"]+)"/.exec(k)[1], n: d(k) })).map((b) => ({ le: b.le === '+Inf' ? Infinity : Number(b.le), n: b.n }))
    .sort((a, b) => a.le - b.le);
  const q = (p) => {
    const want = p * count;
    let prevLe = 0, prevN = 0;
    for (const b of buckets) {
      if (b.n >= want) {
        if (b.le === Infinity) return prevLe * 1000;
        return (prevLe + (b.le - prevLe) * ((want - prevN) / Math.max(1, b.n - prevN))) * 1000;
      }
      prevLe = b.le; prevN = b.n;
    }
    return null;
  };
  return { pool, count, avgMs: +((d(key('sum')) / count) * 1000).toFixed(3), p50EstMs: +q(0.5).toFixed(3), p99EstMs: +q(0.99).toFixed(3),
    source: 'coppice_create_seconds histogram, bucket-interpolated' };
}

async function coppiceSection() {
  console.error('== coppice (cold, no pool)');
  const gw = await launchGateway();
  const rev = (() => { try { return execFileSync('git', ['-C', path.join(import.meta.dirname, '..'), 'log', '-1', '--format=%h %s']).toString().trim().slice(0, 100); } catch { return '?'; } })();
  const built = (() => { try { return fs.statSync(path.join(buildDir, 'coppiced')).mtime.toISOString(); } catch { return '?'; } })();
  notes.push(`coppice: coppiced from ${buildDir} (built ${built}); this checkout at ${rev}`);
  const hasMetrics = !!(await gw.metrics());
  if (!hasMetrics) notes.push('coppice: GET /metrics not available: no server-side create time');
  // Warm-up.
  await run(4, 40, () => gw.create());
  await gw.killAll();
  const cold = {};
  for (const c of CONCS) {
    const m0 = await gw.metrics();
    const { r, extra } = await measured(() => run(c, Ns[c], () => gw.create()));
    const srv = serverCreate(m0, await gw.metrics(), 'miss');
    record('coppice', 'coppice create (cold)', 'create → 201', c, r, { ...extra, ...(srv ? { serverSide: srv } : {}) });
    await gw.killAll();
  }
  for (const c of CONCS) {
    const { r, extra } = await measured(() => run(c, Ns[c], async () => gw.exec(await gw.create())));
    cold[c] = record('coppice', 'coppice create+exec (cold)', 'create + first exec', c, r, extra);
    await gw.killAll();
  }
  for (const c of [1, 10]) {
    const sb = [];
    for (let i = 0; i < c; i++) sb.push(await gw.create());
    for (const s of sb) for (let i = 0; i < 5; i++) await gw.exec(s);
    const { r, extra } = await measured(() => run(c, Ns[c], (w) => gw.exec(sb[w])));
    record('coppice', 'coppice exec (Process/Start via proxy)', 'exec in running', c, r, extra);
    await gw.killAll();
  }

  // Pools: the contract is `--pool TEMPLATE=N`, GET /pools, POST /pools/{t}/warm, POST /pools/{t}/drain.
  const pr = await fetch(`${gw.url}/pools`, { headers: gw.H }).catch((e) => ({ status: 0, e }));
  const poolsStatus = pr.status;
  await stopGateway(gw);
  if (poolsStatus !== 200) {
    const msg = `coppice pool configs skipped: GET /pools answered ${poolsStatus || 'nothing'} on this build (no pools in coppiced yet)`;
    console.error(msg);
    notes.push(msg);
    return;
  }
  console.error('== coppice (warm pool)');
  let pg;
  try {
    pg = await launchGateway(['--pool', 'base=16']);
  } catch (e) {
    notes.push(`coppice pool configs skipped: coppiced --pool base=16 did not start: ${e.message}`);
    return;
  }
  const poolState = async () => {
    const r = await fetch(`${pg.url}/pools`, { headers: pg.H });
    const list = r.ok ? await r.json() : [];
    return (Array.isArray(list) ? list : []).find((p) => p.template === 'base') || null;
  };
  // Fills the pool to `n` ready sandboxes and waits (at most 300 s) until it says so.
  const warm = async (n) => {
    const r = await fetch(`${pg.url}/pools/base/warm`, { method: 'POST', headers: pg.H, body: JSON.stringify({ count: n }) });
    if (!r.ok) throw new Error(`POST /pools/base/warm: ${r.status} ${(await r.text()).slice(0, 200)}`);
    // Refills run at SCHED_IDLE: on a busy machine they wait for idle CPU.
    const t = Date.now(), until = t + 300000;
    let s;
    while (Date.now() < until) {
      s = await poolState();
      if (s && s.available >= n) return { ...s, fillS: +((Date.now() - t) / 1000).toFixed(1) };
      await sleep(100);
    }
    throw new Error(`pool did not reach ${n} available in 300 s (refills run at SCHED_IDLE; was the machine busy?): ${JSON.stringify(s)}`);
  };
  const drain = async () => {
    try { await fetch(`${pg.url}/pools/base/drain`, { method: 'POST', headers: pg.H }); } catch {}
  };
  cleanups.push(drain);
  try {
    await warm(40);
    await run(4, 40, () => pg.create());
    await pg.killAll();
    for (const [label, metric, fn] of [
      ['coppice create (warm pool)', 'create → 201', () => pg.create()],
      ['coppice create+exec (warm pool)', 'create + first exec', async () => pg.exec(await pg.create())],
    ]) {
      for (const c of CONCS) {
        // A pool as large as the run, so every create can be a hit; the refill runs alongside.
        const st = await warm(Ns[c]);
        await sleep(300);
        const m0 = await pg.metrics();
        const { r, extra } = await measured(() => run(c, Ns[c], fn));
        const m1 = await pg.metrics();
        const hit = serverCreate(m0, m1, 'hit'), miss = serverCreate(m0, m1, 'miss');
        record('coppice-pool', label, metric, c, r, { ...extra, poolBefore: st, ...(hit ? { serverSide: hit, serverSideMiss: miss } : {}) });
        await pg.killAll();
      }
    }
  } catch (e) {
    notes.push(`coppice pool configs stopped: ${e.message}`);
    console.error(`coppice pool: ${e.message}`);
  }
  await drain();
  await stopGateway(pg);
}

// ---------------------------------------------------------------- peers
const UID_BASE = 2000000000; // host ids for the peers' user namespaces (Coppice's slots start at 1000000)
const CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'];

// A rootfs like Coppice's host-derived `base` template (src/templates/host_template.h):
// an empty private root with merged-usr symlinks, the host's /usr bind-mounted
// read-only, its own /etc identity files.
function makeRootfs(dir) {
  for (const d of ['usr', 'proc', 'dev', 'sys', 'tmp', 'etc', 'root', 'run', 'var/tmp', 'home/user']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (const l of ['bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32']) {
    if (fs.existsSync(`/usr/${l}`)) fs.symlinkSync(`usr/${l}`, path.join(dir, l));
  }
  fs.writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n');
  fs.writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\nuser:x:1000:\n');
  fs.writeFileSync(path.join(dir, 'etc/hostname'), 'sandbox\n');
  fs.writeFileSync(path.join(dir, 'etc/hosts'), '127.0.0.1 localhost sandbox\n');
  for (const f of ['ld.so.cache', 'nsswitch.conf']) { try { fs.copyFileSync(`/etc/${f}`, path.join(dir, 'etc', f)); } catch {} }
}
// OCI config shared by runc and crun: the namespaces Coppice uses (user with a
// 65536-id map to a high host range, mount, pid, uts, ipc, net, cgroup),
// Coppice's mounts (proc, /dev tmpfs + pts + shm, sysfs ro, /tmp tmpfs, host
// /usr ro), and v1 cgroup limits like a sandbox's (memory, pids, cpu).
// Differences: a plain directory root (Coppice: overlay), no seccomp filter.
function ociConfig(rootfs, args) {
  return {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/root'], cwd: '/',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS }, noNewPrivileges: true,
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }] },
    root: { path: rootfs, readonly: false },
    hostname: 'sandbox',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=64k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'nodev', 'mode=1777'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
      { destination: '/usr', type: 'bind', source: '/usr', options: ['rbind', 'ro', 'nosuid', 'nodev'] },
    ],
    linux: {
      uidMappings: [{ containerID: 0, hostID: UID_BASE, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: UID_BASE, size: 65536 }],
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'network', 'user', 'cgroup'].map((type) => ({ type })),
      resources: { memory: { limit: 512 * 2 ** 20 }, pids: { limit: 1024 }, cpu: { shares: 1024 } },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
const BWRAP_ARGS = ['--unshare-user', '--uid', '0', '--gid', '0', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net',
  '--unshare-cgroup', '--hostname', 'sandbox', '--die-with-parent', '--ro-bind', '/usr', '/usr',
  '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
  '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--ro-bind', '/sys', '/sys', '--dir', '/etc', '--dir', '/root', '--chdir', '/'];

// spawn -> exit; rejects on a non-zero exit with the end of stderr.
function sh(cmd, args, { stdio = ['ignore', 'ignore', 'pipe'], timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio });
    let err = '';
    if (p.stderr) p.stderr.on('data', (d) => { if (err.length < 2000) err += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(t); reject(e); });
    p.on('exit', (code, sig) => {
      clearTimeout(t);
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(cmd)} ${args.slice(0, 6).join(' ')}: exit ${code ?? sig}: ${err.trim().slice(-300)}`));
    });
  });
}

async function peersSection() {
  const have = { runc: which('runc'), crun: which('crun'), bwrap: which('bwrap'), nsenter: which('nsenter'), unshare: which('unshare') };
  const rootfs = path.join(tmp, 'rootfs');
  makeRootfs(rootfs);
  const bundles = {};
  for (const [name, args] of [['true', ['/bin/true']], ['sleep', ['sleep', 'infinity']]]) {
    const b = path.join(tmp, `bundle-${name}`);
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify(ociConfig(rootfs, args), null, 1));
    bundles[name] = b;
  }
  const live = new Map(); // id -> runtime, for cleanup
  const rt = {};
  if (have.runc) {
    const root = path.join(tmp, 'runc-root');
    rt.runc = { name: 'runc', version: version('runc'), cmd: (a) => ['runc', ['--root', root, ...a]],
      config: 'runc run, OCI bundle above, v1 cgroups (cgroupfs driver) at /<id> in every controller' };
  }
  if (have.crun && have.unshare && have.nsenter) {
    // crun 1.8.1 refuses the hybrid cgroup layout (a cgroup2 with a
    // controller beside v1); in a private mount namespace without the
    // cgroup2 mount it sees plain v1. Each crun call goes through nsenter (one
    // extra exec, in the crun clocks; the floor row shows what an exec costs).
    const ns = path.join(tmp, 'crun-mntns');
    fs.writeFileSync(ns, '');
    const root = path.join(tmp, 'crun-root');
    let nsOk = true;
    try {
      execFileSync('unshare', [`--mount=${ns}`, '--propagation', 'private', 'sh', '-c',
        'if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi'], { stdio: 'ignore' });
      cleanups.push(() => { try { execFileSync('umount', [ns], { stdio: 'ignore' }); } catch {} });
    } catch (e) { nsOk = false; notes.push(`crun: could not make its mount namespace: ${e.message}`); }
    if (nsOk) {
      rt.crun = { name: 'crun', version: version('crun'), cmd: (a) => ['nsenter', [`--mount=${ns}`, '--', 'crun', '--root', root, ...a]],
        config: 'crun run via nsenter into a mount ns without the cgroup2 mount (crun 1.8.1 refuses the hybrid layout), OCI bundle above, v1 cgroups at /<id>' };
    }
  } else if (!have.crun) notes.push('crun: not installed (scripts/deps.sh installs it)');
  if (!have.runc) notes.push('runc: not installed (scripts/deps.sh installs it)');
  const killContainer = async (r, id) => {
    const [c, a] = r.cmd(['delete', '-f', id]);
    try { await sh(c, a, { timeoutMs: 20000 }); } catch {}
    live.delete(id);
  };
  cleanups.push(async () => {
    for (const [id, r] of [...live]) await killContainer(r, id);
    // Any cgroup a runtime left behind for our ids.
    for (const ctrl of fs.existsSync('/sys/fs/cgroup') ? fs.readdirSync('/sys/fs/cgroup') : []) {
      const d = path.join('/sys/fs/cgroup', ctrl);
      let ents = [];
      try { ents = fs.readdirSync(d); } catch {}
      for (const e of ents) if (e.startsWith(`${RUNID}-`)) { try { fs.rmdirSync(path.join(d, e)); } catch {} }
    }
  });
  let seq = 0;
  const newId = (tag) => `${RUNID}-${tag}-${++seq}`;

  const peerInfo = {
    rootfs: `${rootfs}: empty private root, merged-usr symlinks, host /usr bind-mounted ro, own /etc/{passwd,group,hostname,hosts}`,
    oci: ociConfig(rootfs, ['/bin/true']),
    bwrap: `bwrap ${BWRAP_ARGS.join(' ')} /bin/true (root tmpfs built by bwrap; user ns maps only 0->0 because bwrap runs as root; no cgroups)`,
  };
  for (const r of Object.values(rt)) peerInfo[r.name] = `${r.version}: ${r.config}`;
  if (have.bwrap) peerInfo.bwrapVersion = version('bwrap');

  const peerConcs = quick ? [1, 10] : [1, 10, 50];
  const peerN = (c) => (quick ? Math.min(Ns[c], 30) : Ns[c]);

  console.error('== floor: node spawn of /bin/true (no container)');
  await run(2, 20, () => sh('/bin/true', []));
  for (const c of peerConcs) {
    const { r, extra } = await measured(() => run(c, peerN(c), () => sh('/bin/true', [])));
    record('floor', 'floor: spawn /bin/true (no container)', 'create + first exec', c, r, extra);
  }
  if (rt.crun) {
    // What the nsenter hop in front of every crun call costs by itself.
    const [cmd, a] = rt.crun.cmd(['--version']);
    const hop = () => sh(cmd, a, { stdio: ['ignore', 'ignore', 'pipe'] });
    await run(2, 10, hop);
    for (const c of peerConcs) {
      const { r, extra } = await measured(() => run(c, peerN(c), hop));
      record('floor', 'floor: nsenter + crun --version (crun hop)', 'create + first exec', c, r, extra);
    }
  }

  // (a) create + first exec + delete.
  const oneShot = {};
  for (const r of Object.values(rt)) {
    oneShot[r.name] = (w, i) => {
      const id = newId('t');
      const [c, a] = r.cmd(['run', '--bundle', bundles.true, id]);
      live.set(id, r);
      return sh(c, a).then(() => live.delete(id), async (e) => { await killContainer(r, id); throw e; });
    };
  }
  if (have.bwrap) oneShot.bwrap = () => sh('bwrap', [...BWRAP_ARGS, '/bin/true']);
  for (const [name, fn] of Object.entries(oneShot)) {
    console.error(`== ${name}: create + first exec`);
    await run(2, 6, fn); // warm-up
    for (const c of peerConcs) {
      const { r, extra } = await measured(() => run(c, peerN(c), fn));
      record(name, `${name} create+exec (run /bin/true)`, 'create + first exec', c, r, extra);
    }
  }

  // (b) exec into a long-lived container.
  for (const r of Object.values(rt)) {
    console.error(`== ${r.name}: exec into running container`);
    for (const c of [1, 10]) {
      const ids = [];
      try {
        for (let i = 0; i < c; i++) {
          const id = newId('s');
          const [cmd, a] = r.cmd(['run', '-d', '--bundle', bundles.sleep, id]);
          live.set(id, r);
          await sh(cmd, a);
          ids.push(id);
        }
        const ex = (w) => { const [cmd, a] = r.cmd(['exec', ids[w], '/bin/true']); return sh(cmd, a); };
        for (let w = 0; w < c; w++) for (let k = 0; k < 3; k++) await ex(w);
        const { r: res, extra } = await measured(() => run(c, peerN(c), ex));
        record(r.name, `${r.name} exec /bin/true`, 'exec in running', c, res, extra);
      } catch (e) {
        notes.push(`${r.name} exec c=${c}: ${e.message}`);
        console.error(`${r.name} exec: ${e.message}`);
      }
      for (const id of ids) await killContainer(r, id);
    }
  }
  if (have.bwrap && have.nsenter) {
    console.error('== bwrap: nsenter into a running bwrap sandbox (bwrap has no exec)');
    for (const c of [1, 10]) {
      const procs = [];
      try {
        const pids = [];
        for (let i = 0; i < c; i++) {
          const p = spawn('bwrap', [...BWRAP_ARGS, '--info-fd', '3', 'sleep', 'infinity'], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
          procs.push(p);
          cleanups.push(() => { try { p.kill('SIGKILL'); } catch {} });
          let info = '';
          const pid = await new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error('bwrap --info-fd: no child-pid in 5 s')), 5000);
            p.stdio[3].on('data', (d) => {
              info += d;
              const m = /"child-pid":\s*(\d+)/.exec(info);
              if (m) { clearTimeout(t); resolve(Number(m[1])); }
            });
            p.on('exit', () => reject(new Error('bwrap exited')));
          });
          pids.push(pid);
        }
        const ex = (w) => sh('nsenter', ['--all', '-t', String(pids[w]), '-r', '-w', '/bin/true']);
        for (let w = 0; w < c; w++) for (let k = 0; k < 3; k++) await ex(w);
        const { r: res, extra } = await measured(() => run(c, peerN(c), ex));
        record('bwrap', 'bwrap: nsenter --all /bin/true (no exec)', 'exec in running', c, res, extra);
      } catch (e) {
        notes.push(`bwrap exec c=${c}: ${e.message}`);
        console.error(`bwrap nsenter: ${e.message}`);
      }
      for (const p of procs) { try { p.kill('SIGKILL'); } catch {} }
    }
  } else if (!have.bwrap) notes.push('bwrap: not installed (scripts/deps.sh installs it)');
  return peerInfo;
}

// ---------------------------------------------------------------- density
const UID_SLOTS = 4096; // NsBackend's default uid_slots (src/sandbox/ns/ns_backend.h); coppiced has no flag for it
function setSysctl(k, v, raised) {
  const old = getSysctl(k);
  if (!old || Number(old) >= Number(v)) return;
  try {
    fs.writeFileSync(sysctlPath(k), String(v));
    raised.push({ key: k, from: old, to: String(v) });
    cleanups.push(() => fs.writeFileSync(sysctlPath(k), old));
  } catch (e) { notes.push(`could not raise ${k} to ${v}: ${e.message}`); }
}
const limitOf = (pid, name) => (new RegExp(`${name}\\s+(\\S+)\\s+(\\S+)`).exec(readFile(`/proc/${pid}/limits`)) || []).slice(1, 3).join('/');
const countFds = (pid) => { try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return -1; } };
const hostTasks = () => Number(readFile('/proc/loadavg').split(' ')[3].split('/')[1]);
function classify(err) {
  const e = err.toLowerCase();
  if (/uid slot|no free slot|slots/.test(e)) return 'uid slots (NsBackend uid_slots)';
  if (/too many open files|emfile|enfile/.test(e)) return 'file descriptors (RLIMIT_NOFILE of coppiced / fs.file-max)';
  if (/inotify/.test(e)) return 'inotify instances (fs.inotify.max_user_instances)';
  if (/clone|fork|resource temporarily unavailable|eagain/.test(e)) return 'processes/threads (kernel.pid_max, threads-max, pids cgroup)';
  if (/enomem|cannot allocate memory|out of memory/.test(e)) return 'memory';
  if (/enospc|no space/.test(e)) return 'no space (disk, or a kernel table such as max_user_namespaces / keys)';
  if (/timeout|timed out|fetch failed|econnreset/.test(e)) return 'gateway unresponsive / timeout';
  return 'unknown (see error)';
}

async function densitySection() {
  console.error(`== density: idle cold sandboxes until ${densityTarget} or the first failure`);
  const raised = [];
  setSysctl('kernel.pid_max', 4194304, raised);
  setSysctl('fs.inotify.max_user_instances', 65536, raised);
  setSysctl('fs.inotify.max_user_watches', 1048576, raised);
  const gw = await launchGateway();
  const gpid = gw.gw.proc.pid;
  // RLIMIT_NOFILE of the gateway: raise the soft limit to the hard one (root here lacks CAP_SYS_RESOURCE to go past it).
  const hard = (readFile(`/proc/${gpid}/limits`).match(/Max open files\s+\S+\s+(\S+)/) || [])[1];
  try { execFileSync('prlimit', ['--pid', String(gpid), `--nofile=${hard}:${hard}`]); } catch (e) { notes.push(`prlimit nofile: ${e.message}`); }
  const limits = {
    gatewayNofile: limitOf(gpid, 'Max open files'), gatewayNproc: limitOf(gpid, 'Max processes'), uidSlots: UID_SLOTS,
    pidMax: getSysctl('kernel.pid_max'), threadsMax: getSysctl('kernel.threads-max'), inotifyInstances: getSysctl('fs.inotify.max_user_instances'),
    maxUserNamespaces: getSysctl('user.max_user_namespaces'), fileMax: getSysctl('fs.file-max'), raisedSysctls: raised,
  };
  await run(4, 20, () => gw.create());
  await gw.killAll();
  await sleep(1000);
  const t0 = Date.now();
  const tasks0 = hostTasks();
  // Three readings a second apart: their spread is how much the rest of the machine moves MemAvailable by itself.
  const readings = async () => {
    const v = [];
    for (let i = 0; i < 3; i++) { v.push(memAvailable()); if (i < 2) await sleep(1000); }
    return v;
  };
  const MEMK = ['MemAvailable', 'AnonPages', 'Shmem', 'SUnreclaim', 'KernelStack', 'PageTables', 'Percpu'];
  const memSnap = () => Object.fromEntries(MEMK.map((k) => [k, meminfo(k)]));
  const beforeV = await readings();
  const before = pct(beforeV, 50);
  const snap0 = memSnap();
  const safetyFloor = 3 * 2 ** 30; // stop before the host has under 3 GiB available
  const maxMs = quick ? 120000 : 900000;
  const sandboxes = [];
  const lat = [];
  let stopReason = null, failure = null;
  const conc = 8;
  let next = 0;
  let lastPrint = Date.now();
  await Promise.all(Array.from({ length: conc }, async () => {
    while (!stopReason && next < densityTarget) {
      next++;
      if (sandboxes.length % 100 === 0 && meminfo('MemAvailable') < safetyFloor) { stopReason = 'safety floor: host MemAvailable under 3 GiB'; break; }
      if (Date.now() - t0 > maxMs) { stopReason = `time cap ${maxMs / 1000} s`; break; }
      const t = performance.now();
      try {
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), 30000);
        const r = await fetch(`${gw.url}/v2/sandboxes`, { method: 'POST', headers: gw.H, body: '{"templateID":"base","timeout":3600}', signal: ac.signal })
          .finally(() => clearTimeout(timer));
        const text = await r.text();
        if (r.status !== 201) throw new Error(`create: ${r.status} ${text.slice(0, 400)}`);
        const j = JSON.parse(text);
        gw.made.add(j.sandboxID);
        sandboxes.push(j);
        lat.push(performance.now() - t);
      } catch (e) {
        if (!failure) {
          failure = { at: sandboxes.length, error: String(e.message || e).slice(0, 600), gatewayFds: countFds(gpid), hostTasks: hostTasks(),
            memAvailable: meminfo('MemAvailable') };
          failure.limit = classify(failure.error);
        }
        stopReason = 'first failure';
      }
      if (Date.now() - lastPrint > 5000) {
        lastPrint = Date.now();
        console.error(`  ${sandboxes.length} sandboxes, ${((before - meminfo('MemAvailable')) / 2 ** 20).toFixed(0)} MiB used, gateway fds ${countFds(gpid)}, host tasks ${hostTasks()}`);
      }
    }
  }));
  if (!stopReason) stopReason = `target ${densityTarget} reached`;
  const count = sandboxes.length;
  const elapsedS = (Date.now() - t0) / 1000;
  await sleep(1000);
  const afterV = await readings();
  const after = pct(afterV, 50);
  const snap1 = memSnap();
  const perSandboxDelta = Object.fromEntries(MEMK.map((k) => [k, count ? Math.round((k === 'MemAvailable' ? snap0[k] - snap1[k] : snap1[k] - snap0[k]) / count) : 0]));
  // envd PSS on a sample of sandboxes; the gateway's own memory and fds.
  let pss = 0, pssN = 0;
  const envdPids = [];
  // Only this gateway's sandboxes (other gateways may run on the machine): their cgroups sit under its parent.
  const parentCg = (() => { try { return 'coppice-' + crypto.createHash('sha256').update(fs.realpathSync(gw.gw.stateDir)).digest('hex').slice(0, 12); } catch { return '?'; } })();
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (readFile(`/proc/${pid}/cmdline`).startsWith('/.coppice/envd') && readFile(`/proc/${pid}/cgroup`).includes(`/${parentCg}/`)) envdPids.push(pid);
  }
  for (const pid of envdPids.filter((_, i) => i % Math.max(1, Math.floor(envdPids.length / 100)) === 0)) {
    const m = /Pss:\s+(\d+)/.exec(readFile(`/proc/${pid}/smaps_rollup`));
    if (m) { pss += Number(m[1]) * 1024; pssN++; }
  }
  // What the memory cgroups charge the sandboxes (user + kernel memory): the
  // gateway's per-state-dir parent cgroup (removeCgroupParents' naming) holds them all.
  let charged = 0;
  try {
    const name = parentCg;
    for (const f of [`/sys/fs/cgroup/memory/${name}/memory.usage_in_bytes`, `/sys/fs/cgroup/${name}/memory.current`]) {
      if (fs.existsSync(f)) { charged = Number(readFile(f)); break; }
    }
  } catch {}
  const gwRss = Number((/VmRSS:\s+(\d+)/.exec(readFile(`/proc/${gpid}/status`)) || [])[1] || 0) * 1024;
  const out = {
    config: 'coppice density (idle cold sandboxes)', system: 'coppice', label: 'coppice density', host: HOST, metric: 'density', concurrency: conc,
    samples: lat.map((x) => +x.toFixed(2)), summary: summary(lat, failure ? 1 : 0),
    density: {
      target: densityTarget, reached: count, stopReason, failure, elapsedS: +elapsedS.toFixed(1),
      hostBytesPerSandbox: count ? Math.round((before - after) / count) : 0, hostBytesTotal: before - after,
      memAvailableReadings: { before: beforeV, after: afterV, noiseBytes: Math.max(...beforeV) - Math.min(...beforeV) },
      meminfoDeltaPerSandbox: perSandboxDelta,
      kernelBytesPerSandbox: perSandboxDelta.SUnreclaim + perSandboxDelta.KernelStack + perSandboxDelta.PageTables + perSandboxDelta.Percpu,
      cgroupChargedBytesPerSandbox: count ? Math.round(charged / count) : 0,
      envdPssBytesPerSandbox: pssN ? Math.round(pss / pssN) : 0, envdProcesses: envdPids.length,
      gatewayRssBytes: gwRss, gatewayFds: countFds(gpid), gatewayThreads: Number((/Threads:\s+(\d+)/.exec(readFile(`/proc/${gpid}/status`)) || [])[1] || 0),
      hostTasksAdded: hostTasks() - tasks0, limits,
      createP50FirstLast: count > 200 ? [pct(lat.slice(0, 100), 50), pct(lat.slice(-100), 50)].map((x) => +x.toFixed(2)) : null,
    },
    command: COMMAND, runAt: new Date().toISOString(),
  };
  results.push(out);
  console.error(`  reached ${count} (${stopReason}) in ${elapsedS.toFixed(1)} s; ${(out.density.hostBytesPerSandbox / 2 ** 20).toFixed(2)} MiB host memory per sandbox`);
  const k0 = Date.now();
  await gw.killAll(16);
  out.density.killAllS = +((Date.now() - k0) / 1000).toFixed(1);
  await stopGateway(gw);
}

// ---------------------------------------------------------------- main
const t0 = Date.now();
const startLoad = load();
let peerInfo = null;
try {
  if (doCoppice) await coppiceSection();
  if (doPeers) peerInfo = await peersSection();
  if (doCoppice && doPeers) {
    // A B A: the first Coppice clock again, to see how far the machine drifted during the run.
    console.error('== coppice again (drift check)');
    const gw = await launchGateway();
    await run(4, 20, () => gw.create());
    await gw.killAll();
    const { r, extra } = await measured(() => run(1, quick ? 30 : 100, async () => gw.exec(await gw.create())));
    record('coppice', 'coppice create+exec (cold, repeat at end)', 'create + first exec', 1, r, extra);
    await stopGateway(gw);
  }
  if (doDensity) await densitySection();
} catch (e) {
  console.error(`compare: ${e.stack || e}`);
  notes.push(`run stopped early: ${e.message}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}

// Ratios: peer p50 / Coppice p50 at the same concurrency (how many times faster Coppice is).
const ratios = [];
const find = (label, c) => results.find((r) => r.label === label && r.concurrency === c && r.summary.count);
for (const [metric, coppiceLabels, peers] of [
  ['create + first exec', ['coppice create+exec (cold)', 'coppice create+exec (warm pool)'],
    ['runc create+exec (run /bin/true)', 'crun create+exec (run /bin/true)', 'bwrap create+exec (run /bin/true)']],
  ['exec in running', ['coppice exec (Process/Start via proxy)'], ['runc exec /bin/true', 'crun exec /bin/true', 'bwrap: nsenter --all /bin/true (no exec)']],
]) {
  for (const cl of coppiceLabels) {
    for (const pl of peers) {
      for (const c of CONCS) {
        const a = find(cl, c), b = find(pl, c);
        if (!a || !b) continue;
        ratios.push({ metric, coppice: cl, peer: pl, concurrency: c, coppiceP50: +a.summary.p50.toFixed(3), peerP50: +b.summary.p50.toFixed(3),
          coppiceOverPeer: +(a.summary.p50 / b.summary.p50).toFixed(4), speedup: +(b.summary.p50 / a.summary.p50).toFixed(2),
          coppiceP99: +a.summary.p99.toFixed(3), peerP99: +b.summary.p99.toFixed(3) });
      }
    }
  }
}

// Issue 5's goals beside what this run measured (a report, not a verdict: the machine is shared).
const goals = [];
const goal = (name, value, target, unit, better) => goals.push({ goal: name, measured: value == null ? null : +value.toFixed(3), target, unit,
  met: value == null ? null : better === 'lower' ? value <= target : value >= target });
const p = (label, c, k) => { const r = find(label, c); return r ? r.summary[k] : null; };
const sp = (peer, c) => { const q = ratios.find((x) => x.coppice === 'coppice create+exec (cold)' && x.peer === peer && x.concurrency === c); return q ? q.speedup : null; };
goal('pool create→201 p50, c=1', p('coppice create (warm pool)', 1, 'p50'), 2, 'ms', 'lower');
goal('pool create→201 p99, c=50', p('coppice create (warm pool)', 50, 'p99'), 25, 'ms', 'lower');
goal('cold create→201 p50, c=1', p('coppice create (cold)', 1, 'p50'), 8, 'ms', 'lower');
goal('create+first exec vs runc (p50 speedup, c=1, cold)', sp('runc create+exec (run /bin/true)', 1), 20, '×', 'higher');
goal('create+first exec vs crun (p50 speedup, c=1, cold)', sp('crun create+exec (run /bin/true)', 1), 10, '×', 'higher');
goal('create+first exec vs bwrap (p50 speedup, c=1, cold)', sp('bwrap create+exec (run /bin/true)', 1), 4, '×', 'higher');
{
  const dd = results.find((r) => r.metric === 'density');
  goal('host memory per idle sandbox (MemAvailable delta)', dd && dd.density.reached ? dd.density.hostBytesPerSandbox / 2 ** 20 : null, 2, 'MiB', 'lower');
  goal('idle sandboxes reached', dd ? dd.density.reached : null, 5000, 'sandboxes', 'higher');
}

const meta = { host: HOST, command: COMMAND, coppiceBuildDir: buildDir, startedAt: new Date(t0).toISOString(), durationS: +((Date.now() - t0) / 1000).toFixed(1),
  loadStart: startLoad, loadEnd: load(), quick, notes, peers: peerInfo,
  coppiceConfig: 'coppiced --listen 127.0.0.1:<free> --state-dir <fresh tmp> (e2e harness); template `base` (host /usr ro under a private root, overlay upper per sandbox); ' +
    'namespaces user (65536-id slot from uid 1000000) + mount, pid, uts, ipc, net (loopback only), cgroup; v1 cgroups cpu/memory/pids; seccomp; coppice-envd as PID 1' };

fs.mkdirSync(outDir, { recursive: true });
for (const r of results) console.log(JSON.stringify(r));
const compact = results.map((r) => ({ ...r, samples: r.samples.map((x) => +x.toFixed(2)) }));
fs.writeFileSync(path.join(outDir, 'compare.json'), JSON.stringify({ meta, goals, ratios, runs: compact }) + '\n');
writeChart(results, meta);

// Table.
const fmt = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(2)).padStart(7);
console.log(`\n${'config'.padEnd(48)} ${'c'.padStart(3)} ${['n', 'fail'].map((h) => h.padStart(5)).join(' ')} ${['min', 'avg', 'p50', 'p95', 'p99', 'max'].map((h) => h.padStart(7)).join(' ')}  (ms)  load  server-side create`);
let lastMetric = '';
for (const r of results) {
  if (r.metric === 'density') continue;
  if (r.metric !== lastMetric) { console.log(`-- ${r.metric}`); lastMetric = r.metric; }
  const s = r.summary;
  const srv = r.serverSide && r.serverSide.count ? `avg ${r.serverSide.avgMs} p50~${r.serverSide.p50EstMs} p99~${r.serverSide.p99EstMs} (${r.serverSide.pool} ${r.serverSide.count})` : '';
  console.log(`${r.label.padEnd(48)} ${String(r.concurrency).padStart(3)} ${[s.count, s.failures].map((x) => String(x).padStart(5)).join(' ')} ${[s.min, s.avg, s.p50, s.p95, s.p99, s.max].map(fmt).join(' ')}  ${(r.load || [''])[0]}  ${srv}`);
}
const d = results.find((r) => r.metric === 'density');
if (d) {
  const x = d.density;
  console.log(`\n-- density: ${x.reached}/${x.target} idle sandboxes (${x.stopReason}${x.failure ? `: ${x.failure.limit}: ${x.failure.error.slice(0, 160)}` : ''}) in ${x.elapsedS} s`);
  console.log(`   host memory ${(x.hostBytesPerSandbox / 2 ** 20).toFixed(3)} MiB/sandbox (MemAvailable delta after drop_caches), memory cgroup charge ${(x.cgroupChargedBytesPerSandbox / 2 ** 20).toFixed(3)} MiB, envd PSS ${(x.envdPssBytesPerSandbox / 1024).toFixed(0)} KiB, gateway RSS ${(x.gatewayRssBytes / 2 ** 20).toFixed(0)} MiB, gateway fds ${x.gatewayFds}, +${x.hostTasksAdded} host tasks; kill all ${x.killAllS} s`);
  console.log(`   MemAvailable noise before the run ${(x.memAvailableReadings.noiseBytes / 2 ** 20).toFixed(0)} MiB (±${(x.memAvailableReadings.noiseBytes / Math.max(1, x.reached) / 1024).toFixed(0)} KiB/sandbox); kernel (SUnreclaim+KernelStack+PageTables+Percpu) ${(x.kernelBytesPerSandbox / 1024).toFixed(0)} KiB/sandbox; meminfo deltas/sandbox ${JSON.stringify(x.meminfoDeltaPerSandbox)}`);
  console.log(`   limits: ${JSON.stringify(x.limits)}`);
}
if (ratios.length) {
  console.log(`\n-- ratios (p50): speedup = peer / coppice`);
  for (const q of ratios) console.log(`${q.metric.padEnd(20)} ${q.coppice.padEnd(36)} vs ${q.peer.padEnd(42)} c=${String(q.concurrency).padStart(2)}  ${String(q.speedup).padStart(7)}×  (coppice/peer ${q.coppiceOverPeer})`);
}
console.log('\n-- issue 5 goals (this run)');
for (const g of goals) console.log(`${g.goal.padEnd(54)} ${g.measured == null ? 'not measured'.padStart(12) : String(g.measured).padStart(12)} ${g.unit.padEnd(9)} goal ${g.unit === '×' || g.unit === 'sandboxes' ? '≥' : '≤'} ${g.target}  ${g.met == null ? '' : g.met ? 'met' : 'not met'}`);
if (notes.length) console.log(`\n-- notes\n${notes.map((n) => `* ${n}`).join('\n')}`);
console.log(`\nwrote ${path.join(outDir, 'compare.json')}, compare.svg${which('rsvg-convert') ? ', compare.png' : ''}; ${meta.durationS} s`);
