// tls_bench: what TLS on the gateway's port costs, plain and TLS side by side
// in one run (two gateways from this build, loopback only).
//
//   node bench/tls_bench.mjs [--quick]
//
//   request, kept alive    GET /health, one connection reused (fetch), latency
//   request, new conn      GET /health on a fresh connection each time (TCP [+ TLS handshake])
//   requests/s             GET /health from 16 kept-alive loops for 3 s
//   download               a 64 MiB file from a sandbox through envd's /files (signed URL, curl), MB/s
//                          (median of 5) and the gateway's CPU seconds per GiB relayed
//
// Makes a throw-away CA and a *.coppice.test certificate with the openssl
// CLI and re-runs itself with NODE_EXTRA_CA_CERTS and a dns.lookup that
// answers 127.0.0.1 for *.coppice.test (no query leaves the process). Needs root.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { execFileSync, spawnSync } from 'node:child_process';
import { pct, summary } from './stats.mjs';
import { startGateway, TEST_API_KEY, gatewaySkipReason, freePort } from '../tests/e2e/lib/harness.mjs';

const quick = process.argv.includes('--quick');
const why = gatewaySkipReason();
if (why) {
  console.error(`tls_bench: cannot run: ${why}`);
  process.exit(77);
}

if (!process.env.TLS_BENCH_DIR) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-tls-bench-'));
  try {
    const run = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    run('req', ...ec, '-keyout', 'gw.key', '-out', 'gw.csr', '-subj', '/CN=coppice.test');
    fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:coppice.test,DNS:*.coppice.test\nextendedKeyUsage=serverAuth\n');
    run('x509', '-req', '-in', 'gw.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'gw.pem',
      '-days', '1', '-extfile', 'ext.cnf');
    fs.writeFileSync(path.join(dir, 'preload.mjs'), `
import dns from 'node:dns';
import net from 'node:net';
dns.lookup = (host, opts, cb) => {
  if (typeof opts === 'function') { cb = opts; opts = {}; }
  const literal = net.isIP(host);
  if (!literal && !/(^|\\.)coppice\\.test$/i.test(host)) return process.nextTick(cb, Object.assign(new Error('no DNS for ' + host), { code: 'ENOTFOUND' }));
  const address = literal ? host : '127.0.0.1', family = literal || 4;
  if (opts && opts.all) return process.nextTick(cb, null, [{ address, family }]);
  process.nextTick(cb, null, address, family);
};`);
    const r = spawnSync(process.execPath, ['--import', path.join(dir, 'preload.mjs'), ...process.argv.slice(1)], {
      stdio: 'inherit', env: { ...process.env, TLS_BENCH_DIR: dir, NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem') } });
    process.exitCode = r.status ?? 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
} else {
  await child(process.env.TLS_BENCH_DIR);
}

// utime + stime of a process, in seconds.
function gatewayCpu(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function child(dir) {
  const { Sandbox } = await import('../tests/e2e/node_modules/e2b/dist/index.mjs');
  const port = await freePort();
  const domain = `coppice.test:${port}`;
  const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
  const plain = await startGateway();
  const tls = await startGateway({ port, tls: { ca, host: 'api.coppice.test' },
    extraArgs: ['--domain', domain, '--tls-cert', path.join(dir, 'gw.pem'), '--tls-key', path.join(dir, 'gw.key')] });
  const modes = [
    { name: 'plain', gw: plain, api: plain.url, opts: { ...plain.opts }, mod: http, host: '127.0.0.1', port: plain.port },
    { name: 'tls', gw: tls, api: `https://api.${domain}`, opts: { apiKey: TEST_API_KEY, domain }, mod: https, host: 'api.coppice.test', port },
  ];
  const rows = [];
  try {
    const n = quick ? 300 : 2000;
    for (const m of modes) {
      const sbx = await Sandbox.create(m.opts);
      await sbx.commands.run('head -c 67108864 /dev/zero > /tmp/big');
      const url = await sbx.downloadUrl('/tmp/big');
      // Warm up.
      for (let i = 0; i < 50; i++) await (await fetch(`${m.api}/health`)).text();
      const kept = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await (await fetch(`${m.api}/health`)).text();
        kept.push(performance.now() - t0);
      }
      const fresh = [];
      for (let i = 0; i < n / 4; i++) {
        const t0 = performance.now();
        await new Promise((resolve, reject) => {
          const req = m.mod.get({ host: '127.0.0.1', port: m.port, path: '/health', agent: false, servername: m.host,
            headers: { Host: `${m.host}:${m.port}` } }, (res) => { res.resume(); res.on('end', resolve); });
          req.on('error', reject);
        });
        fresh.push(performance.now() - t0);
      }
      let count = 0;
      const until = performance.now() + 3000;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (performance.now() < until) {
          await (await fetch(`${m.api}/health`)).text();
          count++;
        }
      }));
      // Downloads with curl (--resolve: no DNS), and the gateway's CPU time for them.
      const mbps = [];
      const u = new URL(url);
      const cpu0 = gatewayCpu(m.gw.proc.pid);
      for (let i = 0; i < 5; i++) {
        const out = execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{size_download} %{speed_download}', '--cacert',
          path.join(dir, 'ca.pem'), '--resolve', `${u.hostname}:${u.port}:127.0.0.1`, url], { encoding: 'utf8' }).split(' ');
        if (Number(out[0]) !== 67108864) throw new Error(`download got ${out[0]} bytes`);
        mbps.push(Number(out[1]) / 1e6);
      }
      const cpuPerGiB = (gatewayCpu(m.gw.proc.pid) - cpu0) / (5 * 64 / 1024);
      await sbx.kill();
      rows.push({ mode: m.name, kept: summary(kept), fresh: summary(fresh), rps: count / 3, mbps: pct(mbps, 50), cpuPerGiB });
    }
  } finally {
    await plain.stop();
    await tls.stop();
  }
  const f = (x) => x.toFixed(3);
  console.log('mode   kept-alive p50/p99 ms   new conn p50/p99 ms   req/s (16 loops)   download MB/s   gateway CPU s/GiB');
  for (const r of rows) {
    console.log(`${r.mode.padEnd(6)} ${f(r.kept.p50)} / ${f(r.kept.p99)}`.padEnd(31) +
      `${f(r.fresh.p50)} / ${f(r.fresh.p99)}`.padEnd(22) + `${r.rps.toFixed(0)}`.padEnd(19) + `${r.mbps.toFixed(0)}`.padEnd(16) + r.cpuPerGiB.toFixed(2));
  }
}
