// gateway_bench: Coppice's create and exec clocks through the gateway's one
// port (benchmarks.md), printed as BenchmarkRun JSON lines and a table.
//
//   node bench/gateway_bench.mjs [--quick] [--json out.jsonl]
//
// Starts its own coppiced (build/coppiced, a fresh state dir, loopback only),
// measures, kills every sandbox it made and stops the gateway. Needs root.
//   create            POST /v2/sandboxes sent -> whole 201 received (envd answers at once)
//   create+exec       create sent -> Process/Start of /bin/true has returned its end event
//   exec              Process/Start of /bin/true in a running sandbox -> end event
//   idle memory       host MemAvailable before - after 32 idle sandboxes, / 32 (+ envd PSS)
import fs from 'node:fs';
import os from 'node:os';
import { pct, summary, hostInfo } from './stats.mjs';
import { startGateway, TEST_API_KEY, gatewaySkipReason } from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;
const why = gatewaySkipReason();
if (why) {
  console.error(`gateway_bench: cannot run: ${why}`);
  process.exit(77);
}

const host = hostInfo;
// MemAvailable after dropping clean caches, so page-cache churn from the
// runs before does not drown the few hundred KiB a sandbox costs.
const memAvailable = () => {
  try { fs.writeFileSync('/proc/sys/vm/drop_caches', '3'); } catch {}
  return Number(/MemAvailable:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;
};

function envelope(obj) {
  const body = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

const gw = await startGateway();
const H = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
const made = [];
async function create() {
  const r = await fetch(`${gw.url}/v2/sandboxes`, { method: 'POST', headers: H, body: '{"templateID":"base","timeout":600}' });
  const j = await r.json();
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(j)}`);
  made.push(j.sandboxID);
  return j;
}
async function execTrue(sbx) {
  const r = await fetch(`${gw.url}/process.Process/Start`, { method: 'POST', body: envelope({ process: { cmd: '/bin/true' }, stdin: false }),
    headers: { 'content-type': 'application/connect+json', 'E2b-Sandbox-Id': sbx.sandboxID, 'X-Access-Token': sbx.envdAccessToken } });
  const b = Buffer.from(await r.arrayBuffer());
  if (!b.includes('exit status 0')) throw new Error(`exec: ${b}`);
}
async function killAll() {
  const ids = made.splice(0);
  for (let i = 0; i < ids.length; i += 20) {
    await Promise.all(ids.slice(i, i + 20).map((id) => fetch(`${gw.url}/sandboxes/${id}`, { method: 'DELETE', headers: H })));
  }
}
async function run(conc, n, fn) {
  const samples = [];
  let failures = 0, next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) {
      next++;
      const t = performance.now();
      try { await fn(); samples.push(performance.now() - t); } catch (e) { failures++; if (failures < 3) console.error(String(e)); }
    }
  }));
  return { samples, failures };
}

const results = [];
const record = (config, metric, concurrency, r, command) => {
  const run = { config, host: host(), metric, concurrency, samples: r.samples.map((x) => +x.toFixed(3)), summary: summary(r.samples, r.failures), command, runAt: new Date().toISOString() };
  results.push(run);
};

try {
  const N = quick ? { 1: 40, 10: 60, 50: 100 } : { 1: 200, 10: 200, 50: 500 };
  // Warm-up.
  await run(4, 20, create);
  await killAll();
  for (const c of [1, 10, 50]) {
    record(`coppice create (cold, no pool)`, 'create', c, await run(c, N[c], create), `node bench/gateway_bench.mjs${quick ? ' --quick' : ''}`);
    await killAll();
  }
  for (const c of [1, 10, 50]) {
    record(`coppice create + first exec (cold)`, 'create+exec', c, await run(c, N[c], async () => execTrue(await create())), 'same');
    await killAll();
  }
  const one = await create();
  for (let i = 0; i < 20; i++) await execTrue(one);
  record('coppice exec round trip (Process/Start /bin/true via proxy)', 'exec', 1, await run(1, quick ? 100 : 200, () => execTrue(one)), 'same');
  await killAll();
  // Idle memory at 32 sandboxes.
  await new Promise((r) => setTimeout(r, 500));
  const before = memAvailable();
  const idle = [];
  for (let i = 0; i < 32; i++) idle.push(await create());
  await new Promise((r) => setTimeout(r, 1000));
  const after = memAvailable();
  // What the memory cgroups charge the sandboxes (user + kernel memory).
  let charged = 0;
  for (const s of idle) {
    for (const base of ['/sys/fs/cgroup/memory', '/sys/fs/cgroup']) {
      try {
        const parent = fs.readdirSync(base).find((d) => d.startsWith('coppice') && fs.existsSync(`${base}/${d}/${s.sandboxID}`));
        if (!parent) continue;
        const f = fs.existsSync(`${base}/${parent}/${s.sandboxID}/memory.usage_in_bytes`) ? 'memory.usage_in_bytes' : 'memory.current';
        charged += Number(fs.readFileSync(`${base}/${parent}/${s.sandboxID}/${f}`, 'utf8'));
        break;
      } catch {}
    }
  }
  const perSandbox = (before - after) / 32;
  let pss = 0;
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('/.coppice/envd')) continue;
      pss += Number(/Pss:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))[1]) * 1024;
    } catch {}
  }
  results.push({ config: 'coppice idle memory (32 sandboxes)', host: host(), metric: 'idle memory', concurrency: 1,
    samples: [], summary: { hostBytesPerSandbox: Math.round(perSandbox), cgroupChargedBytesPerSandbox: Math.round(charged / 32), envdPssBytesPerSandbox: Math.round(pss / 32), sandboxes: 32 },
    command: 'same', runAt: new Date().toISOString() });
  await killAll();
} finally {
  await killAll();
  await gw.stop();
}

for (const r of results) console.log(JSON.stringify(r));
if (jsonOut) fs.writeFileSync(jsonOut, results.map((r) => JSON.stringify(r)).join('\n') + '\n');
console.log(`\n${'clock'.padEnd(58)} ${'c'.padStart(3)} ${['n', 'fail', 'min', 'p50', 'p95', 'p99', 'max'].map((h) => h.padStart(7)).join(' ')}  (ms)`);
for (const r of results) {
  const s = r.summary;
  if (r.metric === 'idle memory') {
    console.log(`${r.config.padEnd(58)} host ${(s.hostBytesPerSandbox / 2 ** 20).toFixed(2)} MiB, cgroup ${(s.cgroupChargedBytesPerSandbox / 2 ** 20).toFixed(2)} MiB, envd PSS ${(s.envdPssBytesPerSandbox / 1024).toFixed(0)} KiB per sandbox`);
    continue;
  }
  console.log(`${r.config.padEnd(58)} ${String(r.concurrency).padStart(3)} ${[s.count, s.failures].map((x) => String(x).padStart(7)).join(' ')} ${[s.min, s.p50, s.p95, s.p99, s.max].map((x) => x.toFixed(2).padStart(7)).join(' ')}`);
}
