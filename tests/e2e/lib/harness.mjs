// Shared set-up for the end-to-end tests: starts the real coppice-envd on a
// free loopback port (the SDK runs in debug mode with sandboxUrl pointing at
// it, so several test runs can share the machine), with its own
// /etc (passwd, group) and homes in a temp dir, and imports the SDK build
// named by COPPICE_SDK (e2b = latest pinned, e2b-245 = 2.45.0).
import { spawn, execFileSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';

export const buildDir = process.env.COPPICE_BUILD_DIR || path.resolve(import.meta.dirname, '../../../build');
export const envdBin = path.join(buildDir, 'coppice-envd');
export const sdkName = process.env.COPPICE_SDK || 'e2b';
// Set by startEnvd (live bindings).
export let ENVD_PORT = 0;
export let envdUrl = '';

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

export async function loadSdk() {
  return await import(sdkName);
}

export const isRoot = process.getuid && process.getuid() === 0;

// A temp root with etc/passwd, etc/group, a home for root and one for `user`
// (uid/gid 1000 when we are root, else our own ids).
export function makeWorld() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-e2e-'));
  const etc = path.join(dir, 'etc');
  const rootHome = path.join(dir, 'root');
  const userHome = path.join(dir, 'home', 'user');
  fs.mkdirSync(etc, { recursive: true });
  fs.mkdirSync(rootHome, { recursive: true });
  fs.mkdirSync(userHome, { recursive: true });
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(path.join(dir, 'home'), 0o755);
  const uid = isRoot ? 1000 : process.getuid();
  const gid = isRoot ? 1000 : process.getgid();
  if (isRoot) fs.chownSync(userHome, uid, gid);
  const myUid = process.getuid();
  fs.writeFileSync(path.join(etc, 'passwd'),
    `root:x:0:0:root:${rootHome}:/bin/bash\n` +
    `user:x:${uid}:${gid}::${userHome}:/bin/bash\n` +
    (isRoot ? '' : `me:x:${myUid}:${process.getgid()}::${rootHome}:/bin/bash\n`));
  fs.writeFileSync(path.join(etc, 'group'), `root:x:0:\nuser:x:${gid}:\nextra:x:4242:user\n`);
  return { dir, etc, rootHome, userHome, uid, gid, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

async function waitHealthy(url, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 204) return;
    } catch {}
    if (Date.now() > until) throw new Error(`envd at ${url} did not become healthy`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Starts envd for one test file. Returns { world, url, proc, stop, init }.
export async function startEnvd({ defaultUser = 'user', token } = {}) {
  if (!fs.existsSync(envdBin)) throw new Error(`missing ${envdBin}: build first`);
  const world = makeWorld();
  ENVD_PORT = await freePort();
  envdUrl = `http://127.0.0.1:${ENVD_PORT}`;
  const proc = spawn(envdBin, ['--host', '127.0.0.1', '--port', String(ENVD_PORT), '--etc', world.etc,
    '--log-level', process.env.COPPICE_LOG_LEVEL || 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  let exited = false;
  proc.on('exit', () => { exited = true; });
  await waitHealthy(envdUrl);
  const init = async (body) => {
    const r = await fetch(`${envdUrl}/init`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body) });
    if (r.status !== 204) throw new Error(`/init answered ${r.status}: ${await r.text()}`);
  };
  // Like the gateway: default user `user`, workdir its home.
  await init({ defaultUser, defaultWorkdir: defaultUser === 'user' ? world.userHome : world.rootHome,
    ...(token ? { accessToken: token } : {}) });
  const stop = async () => {
    if (!exited) {
      proc.kill('SIGTERM');
      await new Promise((r) => (exited ? r() : proc.on('exit', r)));
    }
    world.cleanup();
  };
  return { world, url: envdUrl, proc, stop, init };
}

// A sandbox object of the SDK in debug mode (no API calls), its envd traffic
// sent to the envd started last.
export async function debugSandbox(opts = {}) {
  const { Sandbox } = await loadSdk();
  return await Sandbox.create({ debug: true, sandboxUrl: envdUrl, apiKey: 'e2b_' + '0'.repeat(40), ...opts });
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Pids of live processes whose command line contains `needle`.
export function pidsMatching(needle) {
  try {
    return execFileSync('pgrep', ['-f', needle]).toString().trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export const gatewayBin = path.join(buildDir, 'coppiced');
export const TEST_API_KEY = 'e2b_' + 'c0ffee'.repeat(6) + 'abcd';

// Why gateway tests cannot run here, or null when they can.
export function gatewaySkipReason() {
  if (!isRoot) return 'needs root (namespaces, cgroups, overlayfs)';
  if (!fs.existsSync(gatewayBin)) return `missing ${gatewayBin}`;
  return null;
}

const sha256hex = (s) => crypto.createHash('sha256').update(s).digest('hex');

// The name of the per-state-dir parent cgroup a gateway makes under each
// hierarchy (see coppiced's main.cc); null if the state dir is gone.
export function cgroupParentName(stateDir) {
  let real;
  try { real = fs.realpathSync(stateDir); } catch { return null; }
  return 'coppice-' + sha256hex(real).slice(0, 12);
}

// Where a gateway's parent cgroups are: <mount>/<name> for every cgroup
// hierarchy (v1 controllers and the cgroup2 mount, wherever mounted).
export function cgroupParentDirs(stateDir) {
  const name = cgroupParentName(stateDir);
  if (!name) return [];
  const mounts = new Set();
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash > 0 && (f[dash + 1] === 'cgroup' || f[dash + 1] === 'cgroup2')) mounts.add(f[4]);
  }
  return [...mounts].map((m) => path.join(m, name));
}

// The per-state-dir parent cgroups a gateway made, removed once its
// sandboxes are gone (a gateway removes them itself when it stops cleanly).
export function removeCgroupParents(stateDir) {
  for (const d of cgroupParentDirs(stateDir)) {
    try { fs.rmdirSync(d); } catch {}
  }
}

// The host-wide registry entry of the gateway with this state dir
// (sandbox/ns/uid_ranges.h): its path, and its range while it exists.
export const uidRangeDir = '/run/coppice/uid-ranges';
export function uidRangeEntry(stateDir) {
  const real = fs.realpathSync(stateDir);
  const file = path.join(uidRangeDir, sha256hex(real).slice(0, 16) + '.range');
  let text = null;
  try { text = fs.readFileSync(file, 'utf8'); } catch {}
  if (text === null) return { file, range: null };
  const [base, slots, pid] = text.trim().split(' ').map(Number);
  return { file, range: { base, slots, end: base + slots * 65536, pid } };
}

// Mount points at or below `dir` (from /proc/self/mountinfo), deepest first.
export function mountsUnder(dir) {
  let real;
  try { real = fs.realpathSync(dir); } catch { return []; }
  const out = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = (line.split(' ')[4] || '').replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    if (mp === real || mp.startsWith(real + '/')) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

// Unmounts what a gateway left mounted in its state dir (the sandboxes'
// btrfs image, after a kill -9 or a stop with sandboxes left); the loop
// device under it detaches by itself (autoclear) once nothing uses it.
export function unmountUnder(dir) {
  for (const mp of mountsUnder(dir)) {
    try { execFileSync('umount', ['-l', mp]); } catch {}
  }
}

// Removes a gateway's state dir, unmounting first what it left mounted there.
export function removeStateDir(dir) {
  unmountUnder(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

// A state dir for a test file whose gateways restart on it: made now, and
// removed after the file's tests with the cgroup parents of its gateways,
// once the current one (`current()`, which may be undefined) is stopped.
export function keptStateDir(name, after, current) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `coppice-${name}-`));
  after(async () => {
    await current()?.stop();
    removeCgroupParents(dir);
    removeStateDir(dir);
  });
  return dir;
}

// Starts coppiced on a free loopback port with a fresh state dir (or the one
// given, for restart tests). `apiKeys` is its COPPICE_API_KEYS (default: the
// bare TEST_API_KEY, the default team's admin key; keep it in any other list
// so stop() can clean up). `prefix` runs it under another command (say,
// prlimit with a lower fd limit). Returns { url, proc, stateDir, opts, stop, kill9 }.
// The sandboxes' disk image is small (--disk-image-size 512M) unless asked.
// `listenHost` is the address it listens on (the URLs still use 127.0.0.1,
// so it must include loopback: 127.0.0.1 or 0.0.0.0).
// `port`: listen there (default: a free one). `tls` ({ ca, host }): the
// gateway speaks TLS (its --tls-* flags are in extraArgs); the harness's own
// calls trust `ca` and name `host` (SNI and Host), and `url` is https.
export async function startGateway({ stateDir, keep = false, extraArgs = [], apiKeys = TEST_API_KEY, prefix = [],
  listenHost = '127.0.0.1', port: wantPort, tls } = {}) {
  const dir = stateDir || fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-gw-'));
  const port = wantPort || await freePort();
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const fetch = tls ? (u, init) => tlsFetch(u, init, tls) : globalThis.fetch;
  // A test gateway needs few uid slots, so that several on one host (tests
  // and a real gateway) find ranges clear of each other.
  const slots = extraArgs.includes('--uid-slots') ? [] : ['--uid-slots', '256'];
  const image = extraArgs.some((a) => a.startsWith('--disk-')) ? [] : ['--disk-image-size', '512M'];
  // Sandboxes have no network unless a test asks (`--network on`), and then
  // only inside the fake internet of tests/e2e/net/run.sh.
  const network = extraArgs.includes('--network') ? [] : ['--network', 'off'];
  const [cmd, ...pre] = [...prefix, gatewayBin];
  const proc = spawn(cmd, [...pre, '--listen', `${listenHost}:${port}`, '--state-dir', dir,
    '--log-level', process.env.COPPICE_LOG_LEVEL || 'warn', ...slots, ...image, ...network, ...extraArgs],
  { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, COPPICE_API_KEYS: apiKeys } });
  let exited = false;
  proc.on('exit', () => { exited = true; });
  const until = Date.now() + 20000;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {}
    if (exited || Date.now() > until) {
      // Leaves nothing behind: the process, and the state dir if made here.
      if (!exited) { proc.kill('SIGKILL'); await new Promise((r) => proc.on('exit', r)); }
      if (!stateDir) { removeCgroupParents(dir); removeStateDir(dir); }
      throw new Error(exited ? 'coppiced exited at start' : 'coppiced did not start');
    }
    await sleep(25);
  }
  const opts = { apiKey: TEST_API_KEY, apiUrl: url, sandboxUrl: url };
  const waitExit = () => new Promise((r) => (exited ? r() : proc.on('exit', r)));
  // Kills every sandbox the gateway knows (through its API), then stops it.
  const stop = async () => {
    if (!exited) {
      try {
        const r = await fetch(`${url}/v2/sandboxes?state=running,paused&limit=1000`, { headers: { 'X-API-KEY': TEST_API_KEY } });
        for (const s of r.ok ? await r.json() : []) {
          await fetch(`${url}/sandboxes/${s.sandboxID}`, { method: 'DELETE', headers: { 'X-API-KEY': TEST_API_KEY } });
        }
      } catch {}
      proc.kill('SIGTERM');
      await waitExit();
    }
    if (!keep && !stateDir) {
      removeCgroupParents(dir);
      removeStateDir(dir);
    }
  };
  const kill9 = async () => { proc.kill('SIGKILL'); await waitExit(); };
  return { url, port, proc, stateDir: dir, opts, stop, kill9 };
}

// A small fetch over TLS to 127.0.0.1 trusting `ca` and naming `host` (SNI
// and Host): no name is ever resolved. Answers { ok, status, json(), text() }.
export function tlsFetch(u, init = {}, { ca, host }) {
  const target = new URL(u);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: target.port, path: target.pathname + target.search,
      method: init.method || 'GET', ca, servername: host,
      headers: { ...(init.headers || {}), Host: `${host}:${target.port}` } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ ok: res.statusCode < 300, status: res.statusCode, headers: res.headers, text: async () => body,
          json: async () => JSON.parse(body) });
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

// Host pids of the processes in a cgroup named after sandbox `id`.
export function processesOf(id) {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(id); } catch { return false; }
  });
}

// GET `p` from port `port` of sandbox `id` through gateway `gw`'s proxy
// (Host routing). Answers { status, body }.
export function proxyGet(gw, id, p = '/', { port = 8000, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port: gw.port, path: p, headers: { Host: `${port}-${id}.coppice.test`, ...headers } }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    r.on('error', reject);
    r.end();
  });
}

// Calls `fn` every 50 ms until it gives something truthy (a throw counts as
// not yet), and answers that; an error naming `what` after `ms`.
export async function waitFor(what, fn, ms = 15_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// Why a test that needs the project's criu (scripts/criu.sh) cannot run
// here, or null.
export const criuPath = '/usr/local/lib/coppice/criu/sbin/criu';
export function criuSkipReason() {
  return fs.existsSync(criuPath) ? null : `no criu at ${criuPath} (scripts/criu.sh installs it)`;
}

