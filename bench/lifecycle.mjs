// lifecycle: what a sandbox's state costs to keep and to bring back, side by
// side in one run (benchmarks.md): the cgroup freeze (the fast tier, memory
// kept in RAM), the durable pause with memory (criu checkpoint to disk) and
// its resume, for an idle sandbox and for one holding 50 MB of Python heap;
// the files-only pause; fork x N of an idle sandbox, its children made
// afresh and on a warm pool's spares; the disk each keeps.
//
//   node bench/lifecycle.mjs [--quick] [--n 20] [--forks 10] [--only fork] [--json out.jsonl]
//
// --only fork: the fork rounds alone (--n of them), for work on fork.
// COPPICE_BENCH_GW_ARGS="--workers 10": more flags for the gateway.
//
// Starts its own coppiced (build/coppiced, a fresh state dir, loopback only),
// measures through the REST API (client clock: request sent -> answer
// received), removes everything it made. Needs root and the project's criu.
//
// The client shares the machine's CPUs with the gateway and its sandboxes:
// the commands that end the fork clock go through node's http module on
// kept-alive connections (as an SDK's client keeps them), not fetch, whose
// own CPU per call (~3 ms on a 2-vCPU VM) would be charged to the fork.
// --client fetch measures with fetch instead.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { summary, hostInfo } from './stats.mjs';
import { startGateway, TEST_API_KEY, gatewaySkipReason } from '../tests/e2e/lib/harness.mjs';

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const quick = args.includes('--quick');
const n = Number(arg('--n', quick ? 5 : 20));
const forks = Number(arg('--forks', 10));
const jsonOut = arg('--json', null);
const only = arg('--only', null);
const client = arg('--client', 'http');
if (!['http', 'fetch'].includes(client)) {
  console.error(`lifecycle: --client is http or fetch, not ${client}`);
  process.exit(2);
}
const why = gatewaySkipReason() || (fs.existsSync('/usr/local/lib/coppice/criu/sbin/criu') ? null : 'no criu (scripts/criu.sh)');
if (why) {
  console.error(`lifecycle: cannot run: ${why}`);
  process.exit(77);
}

const gw = await startGateway({ extraArgs: (process.env.COPPICE_BENCH_GW_ARGS || '').split(' ').filter(Boolean) });
const H = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
const made = new Set();
const rows = [];
const api = async (method, p, body) => {
  const r = await fetch(`${gw.url}${p}`, { method, headers: H, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
};
const timed = async (fn) => {
  const t0 = process.hrtime.bigint();
  const out = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e6, out];
};
async function create() {
  const r = await api('POST', '/sandboxes', { templateID: 'base', timeout: 900 });
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
  made.add(r.body.sandboxID);
  return r.body;
}
function envelope(obj) {
  const body = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}
// Starts `cmd` in the background (the stream is left at once).
async function background(sbx, cmd) {
  const ac = new AbortController();
  const r = await fetch(`${gw.url}/process.Process/Start`, { method: 'POST', signal: ac.signal,
    body: envelope({ process: { cmd: '/bin/sh', args: ['-c', cmd] }, stdin: false }),
    headers: { 'content-type': 'application/connect+json', 'E2b-Sandbox-Id': sbx.sandboxID, 'X-Access-Token': sbx.envdAccessToken } });
  if (r.status !== 200) throw new Error(`start: ${r.status}`);
  ac.abort();
}
const keepAlive = new http.Agent({ keepAlive: true });
// Runs `cmd` and returns the whole stream (its end event included).
async function run(sbx, cmd) {
  const body = envelope({ process: { cmd: '/bin/sh', args: ['-c', cmd] }, stdin: false });
  const headers = { 'content-type': 'application/connect+json', 'E2b-Sandbox-Id': sbx.sandboxID, 'X-Access-Token': sbx.envdAccessToken };
  if (client === 'fetch') {
    const r = await fetch(`${gw.url}/process.Process/Start`, { method: 'POST', body, headers });
    return Buffer.from(await r.arrayBuffer()).toString();
  }
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.url}/process.Process/Start`, { method: 'POST', agent: keepAlive, headers: { ...headers, 'content-length': body.length } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
const sandboxDir = (id) => path.join(gw.stateDir, 'sandboxes', id);
const duBytes = (p) => { try { return Number(execFileSync('du', ['-sb', p]).toString().split('\t')[0]); } catch { return 0; } };
const freezerDir = (id) => {
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, type, opts] = line.split(' ');
    if (type === 'cgroup' && opts.split(',').includes('freezer')) {
      const found = execFileSync('find', [mnt, '-maxdepth', '3', '-type', 'd', '-name', id]).toString().trim().split('\n')[0];
      if (found) return found;
    }
  }
  return null;
};
const add = (name, samples, extra = {}) => {
  const s = summary(samples);
  rows.push({ name, ...s, ...extra });
};

// 1. The freeze itself (what the backend writes), for the first tier's cost.
if (!only) {
  const sbx = await create();
  const dir = freezerDir(sbx.sandboxID);
  if (dir) {
    const fr = [], th = [];
    for (let i = 0; i < n * 5; i++) {
      let [ms] = await timed(async () => {
        fs.writeFileSync(`${dir}/freezer.state`, 'FROZEN');
        while (!fs.readFileSync(`${dir}/freezer.state`, 'utf8').startsWith('FROZEN'));
      });
      fr.push(ms);
      [ms] = await timed(async () => fs.writeFileSync(`${dir}/freezer.state`, 'THAWED'));
      th.push(ms);
    }
    add('freeze (cgroup, idle sandbox)', fr);
    add('thaw (cgroup, idle sandbox)', th);
  }
}

// 2. Durable pause / resume with memory, idle and with 50 MB of heap; and
// the files-only pause.
async function cycles(label, sbx, memory) {
  const p = [], r = [];
  let disk = 0;
  for (let i = 0; i < n; i++) {
    const [pm, pr] = await timed(() => api('POST', `/sandboxes/${sbx.sandboxID}/pause`, { memory }));
    if (pr.status !== 204) throw new Error(`pause: ${pr.status} ${JSON.stringify(pr.body)}`);
    p.push(pm);
    if (memory) disk = duBytes(path.join(sandboxDir(sbx.sandboxID), 'checkpoint'));
    const [rm, rr] = await timed(() => api('POST', `/sandboxes/${sbx.sandboxID}/resume`, {}));
    if (rr.status !== 201) throw new Error(`resume: ${rr.status} ${JSON.stringify(rr.body)}`);
    r.push(rm);
  }
  add(`pause ${label}`, p, memory ? { diskBytes: disk } : {});
  add(`resume ${label}`, r);
}
if (!only) {
  const idle = await create();
  await cycles('with memory, idle', idle, true);
  await cycles('files only, idle (resume = cold boot)', idle, false);
  const heavy = await create();
  await background(heavy, "python3 -c 'import os, time; b = bytearray(os.urandom(50 << 20)); time.sleep(86400)'");
  for (let i = 0; i < 200 && !(await run(heavy, 'grep -l 5[0-9][0-9][0-9][0-9] /proc/[0-9]*/status 2>/dev/null | head -1; ps -o rss= -C python3')).match(/\d{5,}/); i++) {
    await new Promise((res) => setTimeout(res, 50));
  }
  await cycles('with memory, 50 MB Python heap', heavy, true);
}

// 3. Fork x N: the answer (every child made), then until every child has
// answered a command (benchmarks.md's clock), side by side for an idle
// parent (nothing but its init and envd: its files are all of it) and one
// running a process of its own (a checkpoint of its memory, criu). Each
// round's children are killed before the next, which starts once the
// kernel has had a moment to finish their teardown; a warm-up round first.
// With `pool`, the template's warm pool holds that many spares, full again
// before each round: an idle parent's children are made on them.
async function forkRounds(label, parent, pool = 0) {
  const total = [], answered = [], perChild = [];
  let failures = 0, childDisk = 0, skipped = null;
  const rounds = only === 'fork' ? n : 1;
  for (let round = -1; round < rounds && !skipped; round++) {
    if (pool && !(await poolFull(pool))) { skipped = `the pool of ${pool} did not fill`; break; }
    await new Promise((res) => setTimeout(res, 300));
    const t0 = process.hrtime.bigint();
    const r = await api('POST', `/sandboxes/${parent.sandboxID}/fork`, { count: forks, timeout: 600 });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 201 && r.status !== 200) { skipped = `POST /sandboxes/{id}/fork answered ${r.status}`; break; }
    const list = Array.isArray(r.body) ? r.body : r.body?.sandboxes || r.body?.results || [];
    const kids = [];
    for (const e of list) {
      const sbx = e?.sandbox;
      if (sbx?.sandboxID) { kids.push(sbx); made.add(sbx.sandboxID); } else failures++;
    }
    const outs = await Promise.all(kids.map((k) => run(k, 'echo ok')));
    const all = Number(process.hrtime.bigint() - t0) / 1e6;
    failures += outs.filter((o) => !o.includes('b2sK')).length; // base64 of "ok\n"
    if (round >= 0) {
      total.push(ms);
      answered.push(all);
      perChild.push(ms / forks);
    }
    childDisk = Math.max(childDisk, ...kids.map((k) => duBytes(path.join(sandboxDir(k.sandboxID), 'upper'))));
    for (const k of kids) {
      await fetch(`${gw.url}/sandboxes/${k.sandboxID}`, { method: 'DELETE', headers: H });
      made.delete(k.sandboxID);
    }
  }
  if (skipped) {
    rows.push({ name: `fork x${forks} (${label})`, skipped });
  } else {
    add(`fork x${forks} (${label}): answer, total`, total, { failures, diskBytesPerChild: childDisk });
    add(`fork x${forks} (${label}): until all ${forks} ran a command`, answered);
    add(`fork x${forks} (${label}): total / ${forks}, per child`, perChild);
  }
}
async function poolFull(count) {
  for (let i = 0; i < 600; i++) {
    const p = ((await api('GET', '/pools')).body || []).find((x) => x.template === 'base');
    if (p && p.available >= count) return true;
    await new Promise((res) => setTimeout(res, 50));
  }
  return false;
}
{
  const idle = await create();
  await forkRounds('idle parent: files', idle);
  // The same parent with a warm pool of twice the children: each child is a
  // spare that takes the parent's files.
  const warm = await api('POST', '/pools/base/warm', { count: 2 * forks });
  if (warm.status === 200) {
    await forkRounds('idle parent, warm pool: spares', idle, 2 * forks);
  } else {
    rows.push({ name: `fork x${forks} (idle parent, warm pool: spares)`, skipped: `POST /pools/base/warm answered ${warm.status}` });
  }
  await api('POST', '/pools/base/drain');
  const busy = await create();
  await background(busy, 'sleep 100000');
  await forkRounds('parent running a process: checkpoint', busy);
}

for (const id of made) await fetch(`${gw.url}/sandboxes/${id}`, { method: 'DELETE', headers: H });
await gw.stop();

const host = hostInfo();
console.log(`lifecycle (${host.cpuCount} CPUs, ${host.cpuModel}, kernel ${host.kernel}, load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}), n=${n}`);
console.log('| what | n | p50 ms | p95 ms | p99 ms | disk |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  if (r.skipped) { console.log(`| ${r.name} | - | - | - | - | ${r.skipped} |`); continue; }
  const disk = r.diskBytes ? `${(r.diskBytes / 2 ** 20).toFixed(1)} MiB checkpoint` : r.diskBytesPerChild !== undefined ? `${(r.diskBytesPerChild / 1024).toFixed(0)} KiB per child's layer` : '';
  console.log(`| ${r.name}${r.failures ? ` (${r.failures} failed)` : ''} | ${r.count} | ${r.p50.toFixed(1)} | ${r.p95.toFixed(1)} | ${r.p99.toFixed(1)} | ${disk} |`);
}
if (jsonOut) fs.writeFileSync(jsonOut, rows.map((r) => JSON.stringify({ bench: 'lifecycle', host, ...r })).join('\n') + '\n');
