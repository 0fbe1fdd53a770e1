// net: what networking costs a sandbox, side by side in one run, inside the
// fake internet of tests/e2e/net/run.sh (it refuses to run anywhere else):
//
//   tests/e2e/net/run.sh --bench bench/net.mjs [--quick] [--n N] [--idle N] [--mb N] [--reps N] [--json out.jsonl]
//
// 1. cold create p50/p95/p99, a gateway with --network on beside one with
//    --network off (no warm pools; creates alternate between the two), then
//    the same two with a warm pool (client clock);
// 2. TCP connect latency (p50/p99, to an accept-and-close port in the fake
//    internet) and throughput (--mb MB sent to a sink there, from a sandbox,
//    from the host and from the host in a cgroup with the sandbox's one-CPU
//    quota; the same downloaded with curl; --reps interleaved rounds, medians);
// 3. a rule update applied: PUT /sandboxes/{id}/network, then the time until a
//    new connection from the sandbox sees the change (a watcher in the
//    sandbox connects every ~2 ms and notes when the outcome flips);
// 4. idle memory per sandbox: MemAvailable before and after --idle idle
//    sandboxes (settled for 3 s each side), divided, with and without
//    networking. Host-wide, so other load on the machine shows up in it.
//
// Prints BenchmarkRun JSON lines and a table.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { startGateway, loadSdk, sleep, TEST_API_KEY } from '../tests/e2e/lib/harness.mjs';
import { FAKENET, gatewayNetArgs, fakenetSkipReason } from '../tests/e2e/lib/fakenet.mjs';
import { summary, hostInfo } from './stats.mjs';

const why = fakenetSkipReason();
if (why) { console.error(`net bench: ${why}`); process.exit(77); }

const argv = process.argv.slice(2);
const flag = (name, def) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : def; };
const quick = argv.includes('--quick');
const N = Number(flag('--n', quick ? 30 : 200));
const IDLE = Number(flag('--idle', quick ? 20 : 100));
const MB = Number(flag('--mb', quick ? 500 : 2000));
const REPS = Number(flag('--reps', quick ? 3 : 7));
const UPDATES = quick ? 20 : 100;
const jsonOut = flag('--json', null);
const command = `tests/e2e/net/run.sh --bench bench/net.mjs ${argv.join(' ')}`.trim();
const runAt = new Date().toISOString();
const rows = [];
const record = (metric, config, values, extra = {}) => {
  const row = { metric, config, summary: summary(values), ...extra, command, runAt, host: hostInfo() };
  rows.push(row);
  const line = JSON.stringify(row);
  console.log(line);
  if (jsonOut) fs.appendFileSync(jsonOut, line + '\n');
};

const { Sandbox } = await loadSdk();
const gateways = [];
const start = async (args, opts = {}) => { const g = await startGateway({ extraArgs: args, ...opts }); gateways.push(g); return g; };
const stopAll = async () => { for (const g of gateways.splice(0)) await g.stop(); };
const netOn = (bridge, subnet) => [...gatewayNetArgs(), '--bridge', bridge, '--subnet', subnet];

const PY = `import json, socket, sys, time
host, mode = sys.argv[1], sys.argv[2]
if mode == 'connect':
    n, port, out = int(sys.argv[3]), int(sys.argv[4]), []
    for _ in range(n):
        s = socket.socket()
        t = time.perf_counter()
        s.connect((host, port))
        out.append((time.perf_counter() - t) * 1000)
        s.close()
    print(json.dumps(out))
elif mode == 'send':
    total, port = int(sys.argv[3]), int(sys.argv[4])
    buf = b'\\0' * (1 << 20)
    s = socket.create_connection((host, port))
    t = time.perf_counter()
    left = total
    while left > 0:
        n = min(left, len(buf))
        s.sendall(buf[:n] if n < len(buf) else buf)
        left -= n
    s.shutdown(socket.SHUT_WR)
    got = int(s.makefile().readline())
    print(json.dumps({'bytes': got, 'seconds': time.perf_counter() - t}))
elif mode == 'watch':
    # Connects every ~2 ms; appends "<unix time> open|closed" to argv[4] each
    # time the outcome differs from the last (the time is the attempt's start).
    port, path, last = int(sys.argv[3]), sys.argv[4], None
    while True:
        t = time.time()
        s = socket.socket()
        s.settimeout(0.01)
        try:
            s.connect((host, port))
            state = 'open'
        except OSError:
            state = 'closed'
        s.close()
        if state != last:
            with open(path, 'a') as f:
                f.write('%r %s\\n' % (t, state))
            last = state
        time.sleep(0.002)
`;
const hostPython = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const pyFile = `${process.env.COPPICE_FAKENET_DIR || '/tmp'}/netbench-${process.pid}.py`;
fs.writeFileSync(pyFile, PY);
const onHost = (...args) => execFileSync(hostPython, [pyFile, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });

async function timedCreates(gws, n) {
  const t = gws.map(() => []);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < gws.length; k++) {
      const t0 = performance.now();
      const s = await Sandbox.create({ ...gws[k].opts });
      t[k].push(performance.now() - t0);
      await s.kill();
    }
  }
  return t;
}

async function poolAvailable(g) {
  const text = await (await fetch(`${g.url}/metrics`)).text();
  const m = /^coppice_pool_available\{[^}]*template="base"[^}]*\} (\S+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}
async function waitPool(g, n, ms = 60_000) {
  const until = Date.now() + ms;
  while ((await poolAvailable(g)) < n && Date.now() < until) await sleep(50);
}

function memAvailableKiB() {
  return Number(/^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]);
}

try {
  // 1. Cold creates, then with a warm pool.
  {
    const on = await start(netOn('cpt-bn0', '10.217.0.0/22'));
    const off = await start(['--network', 'off']);
    await timedCreates([on, off], 5);   // warm-up: page cache, spares
    const [tOn, tOff] = await timedCreates([on, off], N);
    record('cold create', 'network on', tOn, { concurrency: 1 });
    record('cold create', 'network off (loopback only)', tOff, { concurrency: 1 });
    await stopAll();
  }
  {
    const pool = 4;
    const on = await start([...netOn('cpt-bn1', '10.217.4.0/22'), '--pool', `base=${pool}`]);
    const off = await start(['--network', 'off', '--pool', `base=${pool}`]);
    const t = [[], []];
    const gws = [on, off];
    for (let i = 0; i < Math.min(N, 100); i++) {
      for (let k = 0; k < 2; k++) {
        await waitPool(gws[k], pool);
        const t0 = performance.now();
        const s = await Sandbox.create({ ...gws[k].opts });
        t[k].push(performance.now() - t0);
        await s.kill();
      }
    }
    record('warm-pool create (client clock)', 'network on', t[0], { concurrency: 1, pool });
    record('warm-pool create (client clock)', 'network off (loopback only)', t[1], { concurrency: 1, pool });
    await stopAll();
  }

  // 2. and 3. on one network gateway.
  const g = await start(netOn('cpt-bn2', '10.217.8.0/22'));
  const sbx = await Sandbox.create({ ...g.opts, timeoutMs: 3_600_000 });
  await sbx.files.write('/tmp/nb.py', PY);
  const inSbx = async (args) => (await sbx.commands.run(`python3 /tmp/nb.py ${args}`, { timeoutMs: 600_000 })).stdout;
  const nConnect = quick ? 200 : 1000;
  onHost(FAKENET.web, 'connect', '50', String(FAKENET.closePort));   // warm-up
  await inSbx(`${FAKENET.web} connect 50 ${FAKENET.closePort}`);
  record('TCP connect to the fake internet', 'from a sandbox', JSON.parse(await inSbx(`${FAKENET.web} connect ${nConnect} ${FAKENET.closePort}`)));
  record('TCP connect to the fake internet', 'from the host', JSON.parse(onHost(FAKENET.web, 'connect', String(nConnect), String(FAKENET.closePort))));
  // Throughput: REPS rounds, each sending MB from the sandbox (one CPU, its
  // cgroup's quota), from the host unconfined and from the host in a cgroup
  // with the same one-CPU quota (a fair sender), then downloading the same
  // with curl both ways; medians over the rounds. Rounds interleave so that
  // load from elsewhere on the machine hits every config alike.
  const bytes = MB * 1_000_000;
  const cpuCg = fs.existsSync('/sys/fs/cgroup/cpu/tasks') ? '/sys/fs/cgroup/cpu/coppice-netbench'
    : fs.existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup/coppice-netbench' : null;
  if (cpuCg) {
    fs.mkdirSync(cpuCg, { recursive: true });
    if (cpuCg.includes('/cpu/')) {
      fs.writeFileSync(`${cpuCg}/cpu.cfs_period_us`, '100000');
      fs.writeFileSync(`${cpuCg}/cpu.cfs_quota_us`, '100000');
    } else {
      fs.writeFileSync(`${cpuCg}/cpu.max`, '100000 100000');
    }
  }
  const procsFile = cpuCg && (cpuCg.includes('/cpu/') ? `${cpuCg}/tasks` : `${cpuCg}/cgroup.procs`);
  const senders = [
    ['upload from a sandbox (1 CPU)', async () => inSbx(`${FAKENET.web} send ${bytes} ${FAKENET.sinkPort}`)],
    ['upload from the host', async () => onHost(FAKENET.web, 'send', String(bytes), String(FAKENET.sinkPort))],
  ];
  if (procsFile) {
    senders.push(['upload from the host in a 1-CPU cgroup', async () => execFileSync('sh', ['-c',
      `echo $$ > ${procsFile}; exec ${hostPython} ${pyFile} ${FAKENET.web} send ${bytes} ${FAKENET.sinkPort}`],
    { encoding: 'utf8' })]);
  }
  const curlDown = `curl -sS -o /dev/null -w '%{speed_download}' http://${FAKENET.web}/bytes/${bytes}`;
  const runs = {};
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const [who, run] of senders) {
        const r = JSON.parse(await run());
        if (r.bytes !== bytes) throw new Error(`the sink saw ${r.bytes} of ${bytes} bytes`);
        (runs[who] ||= []).push((r.bytes / r.seconds) / 1e6);
      }
      (runs['download from a sandbox (1 CPU)'] ||= []).push(Number((await sbx.commands.run(curlDown, { timeoutMs: 600_000 })).stdout) / 1e6);
      (runs['download from the host'] ||= []).push(Number(execFileSync('sh', ['-c', curlDown], { encoding: 'utf8' })) / 1e6);
    }
  } finally {
    if (cpuCg) fs.rmdirSync(cpuCg);
  }
  const tput = {};
  for (const [k, v] of Object.entries(runs)) {
    tput[k] = summary(v).p50;
    const line = JSON.stringify({ metric: 'TCP throughput (MB/s)', config: k, summary: summary(v), values: v, bytes, command, runAt });
    console.log(line);
    if (jsonOut) fs.appendFileSync(jsonOut, line + '\n');
  }

  const log = '/tmp/transitions';
  await sbx.commands.run(`python3 /tmp/nb.py ${FAKENET.web} watch ${FAKENET.closePort} ${log}`, { background: true, timeoutMs: 0 });
  const lastState = async () => {
    let text = '';
    try { text = await sbx.files.read(log); } catch {}
    const lines = text.trim().split('\n').filter(Boolean);
    const [t, state] = (lines.at(-1) || '0 none').split(' ');
    return { t: Number(t), state };
  };
  while ((await lastState()).state !== 'open') await sleep(20);
  const applied = { closed: [], open: [] }, puts = [];
  for (let i = 0; i < UPDATES; i++) {
    const want = i % 2 === 0 ? 'closed' : 'open';
    const body = want === 'closed' ? { denyOut: [FAKENET.web] } : {};
    const t0 = Date.now();
    const r = await fetch(`${g.url}/sandboxes/${sbx.sandboxId}/network`, { method: 'PUT',
      headers: { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    puts.push(Date.now() - t0);
    if (!r.ok) throw new Error(`PUT network: ${r.status} ${await r.text()}`);
    let s;
    const until = Date.now() + 10_000;
    while ((s = await lastState()).state !== want) {
      if (Date.now() > until) throw new Error(`the change to ${want} was not seen within 10 s`);
      await sleep(5);
    }
    applied[want].push(Math.max(0, s.t * 1000 - t0));
  }
  record('rule update applied (PUT sent -> a new connection sees it)', 'deny an address', applied.closed);
  record('rule update applied (PUT sent -> a new connection sees it)', 'open it again', applied.open,
    { note: 'the watcher times out a blocked connect after 10 ms: this direction reads up to ~12 ms late' });
  record('PUT /sandboxes/{id}/network answered', 'client clock', puts);
  await sbx.kill();
  await stopAll();

  // 4. Idle memory per sandbox, with and without networking.
  const mem = {};
  for (const [name, args] of [['network on', netOn('cpt-bn3', '10.217.12.0/22')], ['network off', ['--network', 'off']]]) {
    const gm = await start(args);
    await sleep(3000);
    const before = memAvailableKiB();
    const list = [];
    for (let i = 0; i < IDLE; i++) list.push(await Sandbox.create({ ...gm.opts, timeoutMs: 3_600_000 }));
    await sleep(3000);
    const afterKiB = memAvailableKiB();
    mem[name] = (before - afterKiB) / IDLE;
    for (const s of list) await s.kill();
    await stopAll();
  }
  for (const [k, v] of Object.entries(mem)) {
    const line = JSON.stringify({ metric: 'idle memory per sandbox (KiB, MemAvailable drop / count)', config: k, value: v,
      sandboxes: IDLE, command, runAt });
    console.log(line);
    if (jsonOut) fs.appendFileSync(jsonOut, line + '\n');
  }

  // The table.
  const f = (x) => x.toFixed(3).padStart(9);
  console.log(`\n${'metric / config'.padEnd(84)} ${['p50', 'p95', 'p99', 'n'].map((h) => h.padStart(9)).join(' ')}   (ms)`);
  for (const r of rows) {
    console.log(`${`${r.metric} / ${r.config}`.padEnd(84)} ${f(r.summary.p50)} ${f(r.summary.p95)} ${f(r.summary.p99)} ${String(r.summary.count).padStart(9)}`);
  }
  console.log('');
  for (const [k, v] of Object.entries(tput)) console.log(`${`TCP throughput ${k}, median of ${REPS}`.padEnd(84)} ${v.toFixed(1).padStart(9)} MB/s (${MB} MB)`);
  for (const base of ['upload from the host', 'upload from the host in a 1-CPU cgroup']) {
    if (!tput[base]) continue;
    console.log(`${`  sandbox / ${base.slice(12)}, upload`.padEnd(84)} ${(100 * tput['upload from a sandbox (1 CPU)'] / tput[base]).toFixed(1).padStart(9)} %`);
  }
  for (const [k, v] of Object.entries(mem)) console.log(`${`idle memory per sandbox, ${k}`.padEnd(84)} ${(v / 1024).toFixed(2).padStart(9)} MiB (${IDLE} sandboxes, MemAvailable)`);
  if (mem['network on'] !== undefined) {
    console.log(`${'  networking\'s share'.padEnd(84)} ${((mem['network on'] - mem['network off']) / 1024).toFixed(2).padStart(9)} MiB`);
  }
} finally {
  await stopAll();
  fs.rmSync(pyFile, { force: true });
}
