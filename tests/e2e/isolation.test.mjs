// What a sandbox cannot do, seen through the SDK as root inside it. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, pidsMatching, sleep } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw, a, b;
before(async () => {
  if (skip) return;
  gw = await startGateway();
  const { Sandbox } = await loadSdk();
  a = await Sandbox.create({ ...gw.opts });
  b = await Sandbox.create({ ...gw.opts });
});
after(async () => { await gw?.stop(); });

const asRoot = (sbx, cmd) => sbx.commands.run(cmd, { user: 'root' }).catch((e) => e);

test(`[${sdkName}] processes: the sandbox sees only its own; its root is an unprivileged uid on the host`, opt, async () => {
  const marker = `coppice-iso-${Date.now()}`;
  await b.commands.run(`sleep 300 && echo ${marker}`, { background: true, timeoutMs: 0 });
  const ps = await asRoot(a, 'ps -eo pid,args');
  assert.ok(!ps.stdout.includes(marker), 'other sandbox invisible');
  assert.ok(!ps.stdout.includes('coppiced'), 'host invisible');
  assert.ok(ps.stdout.split('\n').length < 10, ps.stdout);
  const [hostPid] = pidsMatching(marker);
  assert.ok(hostPid > 0);
  const uid = Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${hostPid}/status`, 'utf8'))[1]);
  assert.ok(uid >= 100000, `sandbox user is host uid ${uid}`);
  const rootProc = await asRoot(b, 'cat /proc/self/uid_map');
  assert.match(rootProc.stdout, /^\s*0\s+[1-9]\d*\s+65536/);
});

test('files: no host secrets or homes; the template and /usr are read-only', opt, async () => {
  const r = await asRoot(a, 'ls -A /root /home; test -e /etc/shadow && echo SHADOW; ls /var/lib | wc -l');
  assert.ok(!r.stdout.includes('SHADOW'));
  assert.deepEqual(r.stdout.trim().split('\n').filter((l) => l && !l.endsWith(':')), ['user', '0']);
  const w = await asRoot(a, 'touch /usr/bin/evil');
  assert.notEqual(w.exitCode, 0);
  // Writes to the root land in the sandbox's own layer, not in the template or the other sandbox.
  await asRoot(a, 'echo mine > /etc/only-a');
  const other = await asRoot(b, 'cat /etc/only-a');
  assert.notEqual(other.exitCode, 0);
  const tmpl = path.join(gw.stateDir, 'templates', 'base', 'rootfs', 'etc', 'only-a');
  assert.equal(fs.existsSync(tmpl), false);
});

test('root cannot mount, load modules, or change the host', opt, async () => {
  for (const cmd of ['mount -t tmpfs none /mnt', 'mount --bind / /mnt', 'unshare -m true', 'insmod /nonexistent.ko',
    'echo 1 > /proc/sys/kernel/sysrq', 'hostname evil', 'ip link add x type dummy']) {
    const r = await asRoot(a, cmd);
    assert.notEqual(r.exitCode, 0, `${cmd} must fail`);
  }
  const h = await asRoot(a, 'hostname');
  assert.equal(h.stdout.trim(), a.sandboxId);
});

test('the network is loopback only', opt, async () => {
  const r = await asRoot(a, 'ls /sys/class/net');
  assert.deepEqual(r.stdout.trim().split(/\s+/), ['lo']);
});

test('a symlink planted in place of the envd socket is never followed', opt, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-evil-'));
  const sock = path.join(dir, 'host.sock');
  let touched = false;
  const srv = net.createServer((c) => { touched = true; c.destroy(); });
  await new Promise((r) => srv.listen(sock, r));
  try {
    const { Sandbox } = await loadSdk();
    const c = await Sandbox.create({ ...gw.opts });
    await c.commands.run(`rm -f /.coppice/run/envd.sock; ln -s ${sock} /.coppice/run/envd.sock`, { user: 'root' }).catch(() => {});
    await sleep(100);
    const r = await fetch(`${gw.url}/health`, { headers: { 'E2b-Sandbox-Id': c.sandboxId } });
    assert.equal(r.status, 502);
    assert.equal(touched, false, 'the host socket was not reached');
    await c.kill();
  } finally {
    srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kill leaves nothing behind: processes, mounts, cgroups, state', opt, async () => {
  const { Sandbox } = await loadSdk();
  const c = await Sandbox.create({ ...gw.opts });
  const marker = `coppice-clean-${Date.now()}`;
  await c.commands.run(`sleep 300 && echo ${marker}`, { background: true, timeoutMs: 0 });
  assert.equal(pidsMatching(marker).length, 1);
  assert.equal(await c.kill(), true);
  assert.deepEqual(pidsMatching(marker), []);
  assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(c.sandboxId));
  for (const ctrl of fs.readdirSync('/sys/fs/cgroup')) {
    const base = path.join('/sys/fs/cgroup', ctrl);
    for (const parent of fs.existsSync(base) && fs.statSync(base).isDirectory() ? fs.readdirSync(base).filter((d) => d.startsWith('coppice')) : []) {
      assert.equal(fs.existsSync(path.join(base, parent, c.sandboxId)), false, `${ctrl}/${parent}/${c.sandboxId}`);
    }
  }
  assert.equal(fs.existsSync(path.join(gw.stateDir, 'sandboxes', c.sandboxId)), false);
});
