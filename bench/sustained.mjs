// sustained: warm pools under a steady stream of creates and kills.
//
//   node bench/sustained.mjs [--rates 25,50,100] [--seconds 60] [--pool 64]
//                            [--parallel 1,default] [--json out.jsonl]
//
// Starts its own coppiced (build/coppiced, a fresh state dir, loopback only)
// with `--pool base=<pool>`, waits for the pool to fill, then for each rate
// sends creates on a fixed schedule (open loop: one every 1/rate s, whether
// or not the last has answered), each killed as soon as it has answered.
// Per rate it prints the pool hit ratio (from the gateway's own counters),
// the client's create clock (POST sent -> whole 201), the host's CPU use and
// the gateway's, and leaves the pool to refill before the next rate.
// --parallel runs the whole series once per refill parallelism (a fresh
// gateway each, `--pool-refill-parallel N`; `default` is the gateway's own
// choice), so one run puts them side by side.
// Needs root. Output: a table and one BenchmarkRun JSON line per rate.
import fs from 'node:fs';
import { summary, hostInfo } from './stats.mjs';
import { startGateway, TEST_API_KEY, gatewaySkipReason, sleep } from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const rates = opt('--rates', '25,50,100').split(',').map(Number);
const seconds = Number(opt('--seconds', '60'));
const poolSize = Number(opt('--pool', '64'));
const jsonOut = opt('--json', null);
const parallels = opt('--parallel', 'default').split(',');
const why = gatewaySkipReason();
if (why) {
  console.error(`sustained: cannot run: ${why}`);
  process.exit(77);
}

const H = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
let gw;

async function pool() {
  const r = await fetch(`${gw.url}/pools`, { headers: H });
  return (await r.json()).find((p) => p.template === 'base');
}
async function waitFull(ms = 180000) {
  const until = Date.now() + ms;
  for (;;) {
    const p = await pool();
    if (p.available >= poolSize && p.filling === 0) return;
    if (Date.now() > until) throw new Error(`pool did not fill: ${JSON.stringify(p)}`);
    await sleep(200);
  }
}
// Busy and total jiffies of the host, and the gateway's own.
function cpuTimes() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3] + line[4];
  const total = line.reduce((a, b) => a + b, 0);
  const st = fs.readFileSync(`/proc/${gw.proc.pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return { busy: total - idle, total, gateway: Number(f[11]) + Number(f[12]) };
}

const runs = [];
for (const parallel of parallels) {
  const extraArgs = ['--pool', `base=${poolSize}`];
  if (parallel !== 'default') extraArgs.push('--pool-refill-parallel', parallel);
  gw = await startGateway({ extraArgs });
  console.log(`refill parallelism ${parallel}`);
  try {
    await waitFull();
    for (const rate of rates) {
      await waitFull();
      const before = await pool();
      const c0 = cpuTimes();
      const samples = [];
      let failures = 0;
      const inflight = new Set();
      const interval = 1000 / rate;
      const start = performance.now();
      const n = Math.round(rate * seconds);
      for (let i = 0; i < n; i++) {
        const due = start + i * interval;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        const p = (async () => {
          const t0 = performance.now();
          const r = await fetch(`${gw.url}/v2/sandboxes`, { method: 'POST', headers: H, body: '{"templateID":"base"}' });
          const j = await r.json();
          const ms = performance.now() - t0;
          if (r.status !== 201) {
            failures++;
            return;
          }
          samples.push(ms);
          await fetch(`${gw.url}/sandboxes/${j.sandboxID}`, { method: 'DELETE', headers: H });
        })().catch(() => { failures++; });
        inflight.add(p);
        p.finally(() => inflight.delete(p));
      }
      await Promise.all([...inflight]);
      const elapsed = (performance.now() - start) / 1000;
      const c1 = cpuTimes();
      const after = await pool();
      const hits = after.hits - before.hits, misses = after.misses - before.misses;
      const hz = 100;  // USER_HZ
      const run = {
        config: `sustained create+kill ${rate}/s, pool ${poolSize}, refill parallelism ${parallel}`,
        host: hostInfo(),
        metric: 'create (POST sent -> 201)',
        concurrency: 1,
        rate,
        seconds: +elapsed.toFixed(1),
        hitRatio: hits + misses ? hits / (hits + misses) : 0,
        hits,
        misses,
        hostCpuPct: +((100 * (c1.busy - c0.busy)) / (c1.total - c0.total)).toFixed(1),
        gatewayCpuPct: +((100 * (c1.gateway - c0.gateway)) / hz / elapsed).toFixed(1),
        samples,
        summary: summary(samples, failures),
        command: `node bench/sustained.mjs --rates ${rates.join(',')} --seconds ${seconds} --pool ${poolSize} --parallel ${parallel}`,
        runAt: new Date().toISOString(),
      };
      runs.push(run);
      const s = run.summary;
      console.log(`${String(rate).padStart(4)}/s  n=${s.count} fail=${failures}  hit ${(run.hitRatio * 100).toFixed(1)}%  ` +
        `p50 ${s.p50.toFixed(2)} ms  p95 ${s.p95.toFixed(2)}  p99 ${s.p99.toFixed(2)}  max ${s.max.toFixed(1)}  ` +
        `host CPU ${run.hostCpuPct}%  gateway CPU ${run.gatewayCpuPct}% (of one core)`);
    }
  } finally {
    await gw.stop();
  }
}
if (jsonOut) fs.writeFileSync(jsonOut, runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
