// Pause with memory (the default) with the real SDK: the sandbox's processes
// are checkpointed to disk (criu) and end, and a resume restores them where
// they were, across a gateway killed with SIGKILL; many cycles lose nothing;
// onTimeout pause keeps memory; autoResume wakes a paused sandbox for a
// request through the proxy. Needs root and the project's criu
// (scripts/criu.sh).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { criuSkipReason, processesOf, proxyGet, waitFor, keptStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason() || criuSkipReason();
const opt = skip ? { skip } : {};
const headers = { 'X-API-KEY': TEST_API_KEY, 'content-type': 'application/json' };
let gw;
const stateDir = keptStateDir('pausemem', after, () => gw);
const start = () => startGateway({ stateDir });


// GET `p` from port 8000 of sandbox `id` through the gateway's proxy.
const viaProxy = (id, p = '/', headers = {}) => proxyGet(gw, id, p, { headers });
const until = waitFor;
async function stateOf(id) {
  return (await (await fetch(`${gw.url}/sandboxes/${id}`, { headers })).json()).state;
}

// A server holding 50 MB in memory, a log file it keeps open for writing,
// and a request counter that only its memory holds.
const server = `
import hashlib, http.server, os
blob = bytearray(os.urandom(50 * 1024 * 1024))
digest = hashlib.sha256(blob).hexdigest()
log = open('/home/user/served.log', 'a', buffering=1)
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        log.write(f'{n}\\n')
        body = f'{n} {hashlib.sha256(blob).hexdigest() == digest} {digest}'.encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()
`;

test(`[${sdkName}] a 50 MB Python heap, an open file, a server and a PTY survive pause, kill -9 of the gateway and resume`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const id = sbx.sandboxId;
  await sbx.files.write('/home/user/srv.py', server);
  await sbx.commands.run('python3 /home/user/srv.py', { background: true, timeoutMs: 0 });
  const first = await until('the server', async () => { const r = await viaProxy(id); return r.status === 200 && r; });
  const [n1, intact1, digest] = first.body.split(' ');
  assert.equal(n1, '1');
  assert.equal(intact1, 'True');
  // A shell on a PTY with a variable only its memory holds.
  let out = '';
  const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += new TextDecoder().decode(d); }, timeoutMs: 0 });
  await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('export KEPT=in-memory-42\n'));
  await until('the PTY shell', async () => out.includes('in-memory-42'));
  await pty.disconnect();

  const t0 = Date.now();
  assert.equal(await sbx.pause(), true);
  const pauseMs = Date.now() - t0;
  assert.equal(await stateOf(id), 'paused');
  assert.deepEqual(processesOf(id), [], 'no process is left while paused');
  assert.ok(fs.existsSync(path.join(stateDir, 'sandboxes', id, 'checkpoint', 'pstree.img')), 'the checkpoint is on disk');
  // Pausing a paused sandbox is a conflict.
  const again = await fetch(`${gw.url}/sandboxes/${id}/pause`, { method: 'POST', headers, body: '{}' });
  assert.equal(again.status, 409);

  await gw.kill9();
  gw = await start();
  assert.equal(await stateOf(id), 'paused');
  const t1 = Date.now();
  const back = await Sandbox.connect(id, gw.opts);
  const resumeMs = Date.now() - t1;
  console.log(`# pause with memory (50 MB heap): pause ${pauseMs} ms, resume ${resumeMs} ms (client clock)`);
  // The server answers from the same memory: its counter goes on, its data intact.
  const second = await viaProxy(id);
  assert.equal(second.status, 200);
  assert.deepEqual(second.body.split(' '), ['2', 'True', digest]);
  // The file it held open is still its own: both lines in one file.
  assert.equal(await back.files.read('/home/user/served.log'), '1\n2\n');
  // The PTY's shell is the same process, its variable still set.
  out = '';
  const again2 = await back.pty.connect(pty.pid, { onData: (d) => { out += new TextDecoder().decode(d); }, timeoutMs: 0 });
  await back.pty.sendInput(pty.pid, new TextEncoder().encode('echo "got=$KEPT"\n'));
  await until('the PTY after resume', async () => out.includes('got=in-memory-42'));
  await again2.disconnect();
  // Resuming a running sandbox is a conflict.
  const resumeRunning = await fetch(`${gw.url}/sandboxes/${id}/resume`, { method: 'POST', headers, body: '{}' });
  assert.equal(resumeRunning.status, 409);
  await back.kill();
  assert.equal(fs.existsSync(path.join(stateDir, 'sandboxes', id)), false, 'kill removes its state dir');
});

test(`[${sdkName}] pause/resume cycles with memory lose nothing`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  // A counter only memory holds, written to a file (whole, by a rename) on each step.
  await sbx.commands.run('i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.02; done', { background: true, timeoutMs: 0 });
  const cycles = sdkName === 'e2b' ? 100 : 20;
  let last = 0;
  const times = [];
  for (let c = 0; c < cycles; c++) {
    await sbx.files.write('/home/user/cycle.txt', `cycle ${c}`);
    const t0 = Date.now();
    assert.equal(await sbx.pause(), true, `pause ${c}`);
    assert.deepEqual(processesOf(sbx.sandboxId), [], `pause ${c} is on disk (no process left), not a freeze`);
    const b = await Sandbox.connect(sbx.sandboxId, gw.opts);
    times.push(Date.now() - t0);
    assert.equal(await b.files.read('/home/user/cycle.txt'), `cycle ${c}`);
    const now = Number((await b.files.read('/tmp/count')).trim());
    assert.ok(now >= last, `the counter went back: ${now} after ${last} (cycle ${c})`);
    last = now;
  }
  // Still counting on from memory after all of them (never restarted at 1).
  const end = await until('the counter to move', async () => {
    const v = Number((await sbx.files.read('/tmp/count')).trim());
    return v > last && v;
  });
  assert.ok(end > last);
  times.sort((a, b) => a - b);
  console.log(`# ${cycles} pause+resume cycles with memory: median ${times[times.length >> 1]} ms, max ${times.at(-1)} ms`);
  await sbx.kill();
});

test(`[${sdkName}] onTimeout pause with memory: paused at its timeout with its processes, connect resumes them`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const r = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers, body: JSON.stringify({ templateID: 'base', timeout: 600, autoPause: true }) });
  assert.equal(r.status, 201, await r.clone().text());
  const id = (await r.json()).sandboxID;
  const sbx = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 600_000 });
  const h = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  await h.disconnect();
  await sbx.setTimeout(2_000);
  await until('the pause at its timeout', async () => (await stateOf(id)) === 'paused');
  assert.deepEqual(processesOf(id), []);
  const back = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 600_000 });
  assert.equal((await back.commands.run(`test -d /proc/${h.pid} && cat /proc/${h.pid}/comm`)).stdout.trim(), 'sleep', 'the same process, restored');
  await back.kill();
});

test(`[${sdkName}] autoResume: a request through the proxy resumes a paused sandbox and is served`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const r = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers,
    body: JSON.stringify({ templateID: 'base', timeout: 600, lifecycle: { onTimeout: 'pause', autoResume: true } }) });
  assert.equal(r.status, 201, await r.clone().text());
  const id = (await r.json()).sandboxID;
  const sbx = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 600_000 });
  assert.equal((await sbx.getInfo()).lifecycle?.autoResume ?? true, true);
  await sbx.files.write('/home/user/index.html', 'served');
  await sbx.commands.run('cd /home/user && python3 -m http.server 8000', { background: true, timeoutMs: 0 });
  await until('the server', async () => (await viaProxy(id, '/index.html')).status === 200);
  await sbx.pause();
  assert.equal(await stateOf(id), 'paused');
  // A request to envd without its token does not wake it.
  const stranger = await new Promise((resolve, reject) => {
    const q = http.request({ host: '127.0.0.1', port: gw.port, path: '/health', headers: { Host: `49983-${id}.coppice.test` } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    q.on('error', reject);
    q.end();
  });
  assert.equal(stranger, 502);
  assert.equal(await stateOf(id), 'paused');
  // A request to its port does: the client just waits.
  const got = await viaProxy(id, '/index.html');
  assert.equal(got.status, 200);
  assert.equal(got.body, 'served');
  assert.equal(await stateOf(id), 'running');
  // Without autoResume a paused sandbox stays paused.
  const plain = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await plain.pause();
  assert.equal((await viaProxy(plain.sandboxId)).status, 502);
  assert.equal(await stateOf(plain.sandboxId), 'paused');
  await Sandbox.kill(plain.sandboxId, gw.opts);
  await Sandbox.kill(id, gw.opts);
});

// criu runs as host root inside the sandbox's mount namespace: nothing the
// sandbox's root can write there may steer it. Its config file
// (/etc/criu/default.conf can name an action script, which criu would run as
// host root) is never read, and its probe cache (/run/criu.kdat, here a FIFO
// that would block criu's open) is kept on the host.
test(`[${sdkName}] a sandbox's root cannot steer criu through files in the sandbox`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const plant = [
    'mkdir -p /etc/criu',
    'printf "action-script /tmp/pwn.sh\\n" > /etc/criu/default.conf',
    'printf "#!/bin/sh\\nid -u >> /tmp/pwned\\n" > /tmp/pwn.sh',
    'chmod 755 /tmp/pwn.sh',
    'rm -f /run/criu.kdat && mkfifo /run/criu.kdat',
  ].join(' && ');
  const r = await sbx.commands.run(plant, { user: 'root' });
  assert.equal(r.exitCode, 0, r.stderr);
  // What confines the sandbox's root, before and after: its seccomp filter
  // and capability bound (PID 1, envd, a new process) come back as they were.
  const confinement = "grep -hE '^(Seccomp|CapBnd|CapEff):' /proc/1/status /proc/2/status /proc/self/status";
  const before = (await sbx.commands.run(confinement, { user: 'root' })).stdout;
  assert.match(before, /Seccomp:\s+2/);
  const t0 = Date.now();
  assert.equal(await sbx.pause(), true);
  assert.ok(Date.now() - t0 < 20_000, 'the pause did not wait on the planted FIFO');
  assert.deepEqual(processesOf(sbx.sandboxId), [], 'written to disk');
  const back = await Sandbox.connect(sbx.sandboxId, gw.opts);
  const pwned = await back.commands.run('cat /tmp/pwned 2>/dev/null || echo none', { user: 'root' });
  assert.equal(pwned.stdout.trim(), 'none', 'criu ran the sandbox\'s action script');
  assert.equal((await back.commands.run(confinement, { user: 'root' })).stdout, before, 'confinement after a restore');
  await back.kill();
});

// The gateway killed with SIGKILL at some point of a pause or of a resume:
// after its restart the sandbox is either paused or running, its process
// and files whole, never lost nor left stopped.
test(`[${sdkName}] kill -9 of the gateway during a pause or a resume: the sandbox is paused or running, whole`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const id = sbx.sandboxId;
  await sbx.files.write('/home/user/kept.txt', 'kept');
  const h = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  await h.disconnect();
  const check = async (what) => {
    const state = await stateOf(id);
    assert.ok(state === 'running' || state === 'paused', `${what}: ${state}`);
    if (state === 'paused') assert.deepEqual(processesOf(id), [], `${what}: paused with processes left`);
    const back = await Sandbox.connect(id, { ...gw.opts, timeoutMs: 600_000 });
    const ps = await back.commands.run(`cat /proc/${h.pid}/comm; awk '{print $3}' /proc/${h.pid}/stat`);
    assert.deepEqual(ps.stdout.trim().split('\n'), ['sleep', 'S'], `${what}: the process is there and not stopped`);
    assert.equal(await back.files.read('/home/user/kept.txt'), 'kept', what);
    return state;
  };
  const seen = new Set();
  for (const delay of [20, 80, 160, 300]) {
    const pausing = fetch(`${gw.url}/sandboxes/${id}/pause`, { method: 'POST', headers, body: '{}' }).catch(() => null);
    await sleep(delay);
    await gw.kill9();
    await pausing;
    gw = await start();
    seen.add(`pause@${delay}: ${await check(`killed ${delay} ms into a pause`)}`);

    const p = await fetch(`${gw.url}/sandboxes/${id}/pause`, { method: 'POST', headers, body: '{}' });
    assert.equal(p.status, 204);
    const resuming = fetch(`${gw.url}/sandboxes/${id}/resume`, { method: 'POST', headers, body: '{}' }).catch(() => null);
    await sleep(delay);
    await gw.kill9();
    await resuming;
    gw = await start();
    seen.add(`resume@${delay}: ${await check(`killed ${delay} ms into a resume`)}`);
  }
  console.log(`# after the restart: ${[...seen].join(', ')}`);
  await Sandbox.kill(id, gw.opts);
  assert.equal(fs.existsSync(path.join(stateDir, 'sandboxes', id)), false);
});

// /dev/shm is a tmpfs of the sandbox's own: its files (and one a process
// holds open) come back with a resume, owners and all.
test(`[${sdkName}] /dev/shm is kept across a pause with memory`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const sbx = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  await sbx.commands.run('echo kept > /dev/shm/file && mkdir -p /dev/shm/d/e && echo deep > /dev/shm/d/e/f');
  const h = await sbx.commands.run("exec 7>/dev/shm/held; echo one >&7; while sleep 0.05; do test -e /tmp/go && { echo two >&7; rm /tmp/go; }; done", { background: true, timeoutMs: 0 });
  await h.disconnect();
  await until('the held file', async () => (await sbx.files.read('/dev/shm/held')) === 'one\n');
  assert.equal(await sbx.pause(), true);
  assert.deepEqual(processesOf(sbx.sandboxId), []);
  const back = await Sandbox.connect(sbx.sandboxId, gw.opts);
  assert.equal(await back.files.read('/dev/shm/file'), 'kept\n');
  assert.equal(await back.files.read('/dev/shm/d/e/f'), 'deep\n');
  assert.equal((await back.commands.run('stat -c %U /dev/shm/file /dev/shm/d')).stdout, 'user\nuser\n');
  await back.files.write('/tmp/go', '');
  await until('the held file written through its old fd', async () => (await back.files.read('/dev/shm/held')) === 'one\ntwo\n');
  await back.kill();
});

// The template rebuilt while a sandbox is paused: it resumes, memory and
// all, on the build it ran on (kept aside until no sandbox names it).
test(`[${sdkName}] a template rebuilt while a sandbox is paused: it resumes on its own build`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const { execFileSync } = await import('node:child_process');
  const templates = path.join(stateDir, 'templates');
  const name = `rebuilt${process.pid}`;
  const build = (marker) => {
    const dir = path.join(templates, name);
    fs.mkdirSync(dir);
    execFileSync('cp', ['-a', path.join(templates, 'base', 'rootfs'), path.join(dir, 'rootfs')]);
    fs.writeFileSync(path.join(dir, 'rootfs', 'build.txt'), marker);
    fs.copyFileSync(path.join(templates, 'base', 'template.toml'), path.join(dir, 'template.toml'));
  };
  build('first');
  assert.equal((await fetch(`${gw.url}/templates/reload`, { method: 'POST', headers })).status, 200);
  const sbx = await Sandbox.create(name, { ...gw.opts, timeoutMs: 600_000 });
  const h = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  await h.disconnect();
  assert.equal(await sbx.pause(), true);
  // A rebuild as the builder does it: the old build moved aside, a new one in its place.
  fs.mkdirSync(path.join(templates, '.retired'), { recursive: true });
  fs.renameSync(path.join(templates, name), path.join(templates, '.retired', `${name}-1`));
  build('second');
  assert.equal((await fetch(`${gw.url}/templates/reload`, { method: 'POST', headers })).status, 200);
  const back = await Sandbox.connect(sbx.sandboxId, gw.opts);
  assert.equal((await back.commands.run('cat /build.txt')).stdout, 'first', 'its own build');
  assert.equal((await back.commands.run(`cat /proc/${h.pid}/comm`)).stdout.trim(), 'sleep', 'restored');
  const fresh = await Sandbox.create(name, { ...gw.opts });
  assert.equal((await fresh.commands.run('cat /build.txt')).stdout, 'second', 'new sandboxes get the new build');
  await fresh.kill();
  await back.kill();
});

// Each sandbox boots with a boot id of its own (/proc/sys/kernel/random/
// boot_id, which the sandbox cannot change): a resume with memory keeps it
// (the processes go on), a files-only resume is a new boot with a new one.
test(`[${sdkName}] boot id: a sandbox's own, kept by a resume with memory, new after a files-only resume`, opt, async () => {
  const { Sandbox } = await loadSdk();
  if (!gw) gw = await start();
  const bootId = async (s) => (await s.commands.run('cat /proc/sys/kernel/random/boot_id')).stdout.trim();
  const host = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const a = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const b = await Sandbox.create({ ...gw.opts, timeoutMs: 600_000 });
  const first = await bootId(a);
  assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(first, host, 'not the host\'s');
  assert.notEqual(first, await bootId(b), 'not another sandbox\'s');
  const w = await a.commands.run('echo x > /proc/sys/kernel/random/boot_id', { user: 'root' }).catch((e) => e);
  assert.notEqual(w.exitCode ?? 0, 0, 'read-only for the sandbox\'s root');
  assert.equal(await a.pause(), true);
  const back = await Sandbox.connect(a.sandboxId, { ...gw.opts, timeoutMs: 600_000 });
  assert.equal(await bootId(back), first, 'a resume with memory goes on in the same boot');
  const r = await fetch(`${gw.url}/sandboxes/${a.sandboxId}/pause`, { method: 'POST', headers, body: '{"memory": false}' });
  assert.equal(r.status, 204);
  const cold = await Sandbox.connect(a.sandboxId, { ...gw.opts, timeoutMs: 600_000 });
  const second = await bootId(cold);
  assert.notEqual(second, first, 'a files-only resume is a new boot');
  assert.notEqual(second, host);
  await cold.kill();
  await b.kill();
});
