// Rootless template builds, end to end: the test (root) makes two temporary
// users, one with a subordinate id range in /etc/subuid and /etc/subgid and
// one without, and a tiny image itself (busybox from the local test
// packages; an OCI layout and a docker-archive tar, no network). As the
// first user, `coppice template build` builds from the archive and from a
// Dockerfile whose RUN steps run as the image's root and as a non-root
// account, and from a registry it starts on loopback; the files land owned by that user's host ids, and the RUN steps
// saw themselves in a user namespace whose root is the user (never host
// root). `coppice template install` (root) takes the build into the
// gateway's templates root with the owners shifted back, and a sandbox runs
// on it. Refused, with the reason: a Debian recipe rootless, a user without
// a subordinate range, and an install of a tree with a file the user does
// not own. The users, their ranges and every file are removed afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, buildDir, loadSdk, sdkName, freePort, sleep, TEST_API_KEY } from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
const sourceDir = process.env.COPPICE_SOURCE_DIR || path.resolve(import.meta.dirname, '../..');
const debs = process.env.COPPICE_TEST_DEBS || '/var/cache/coppice/test-debs';
const have = (bin) => ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => fs.existsSync(path.join(d, bin)));
const tools = ['skopeo', 'umoci', 'dpkg-deb', 'setfattr', 'getfattr', 'newuidmap', 'newgidmap', 'useradd', 'userdel', 'usermod', 'runuser', 'unshare'];
const busyboxDeb = fs.existsSync(debs) ? fs.readdirSync(debs).find((f) => f.startsWith('busybox-static_')) : null;
let skip = gatewaySkipReason() ||
  (fs.existsSync(cliBin) ? null : `missing ${cliBin}`) ||
  (tools.find((b) => !have(b)) ? `missing ${tools.find((b) => !have(b))} (scripts/deps.sh installs it)` : null) ||
  (busyboxDeb ? null : `no busybox-static package in ${debs} (run scripts/test-debs.sh)`);
// Whether this kernel lets an unprivileged user make a user namespace.
if (!skip) {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'unshare', '--user', '--map-root-user', 'true']);
  if (r.status !== 0) skip = `this kernel does not let an unprivileged user make a user namespace: ${String(r.stderr).trim()}`;
}
const opt = skip ? { skip } : {};

const suffix = crypto.randomBytes(3).toString('hex');
const builder = `cprl${suffix}`;      // has a subordinate range
const single = `cprs${suffix}`;       // has none
let gw, Sandbox, work, layout, archive, ctx, userRoot, ids = {};
const made = [];
const capV2 = '0x0100000200200000000000000000000000000000';
const capOf = (p) => (sh('getfattr', ['--absolute-names', '-n', 'security.capability', '-e', 'hex', p])
  .match(/security\.capability=(0x[0-9a-f]+)/) || [])[1];

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }).toString();
}

// The user's first range in an /etc/subuid-style file, or null.
function subRange(file, name) {
  const line = fs.readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  if (!line) return null;
  const [, start, count] = line.split(':');
  return { start: Number(start), count: Number(count) };
}

// A free range of 65536 above every range in both files.
function freeRange() {
  let top = 100000;
  for (const f of ['/etc/subuid', '/etc/subgid']) {
    if (!fs.existsSync(f)) continue;
    for (const l of fs.readFileSync(f, 'utf8').split('\n')) {
      const [n, s, c] = l.split(':');
      if (n && s && c) top = Math.max(top, Number(s) + Number(c));
    }
  }
  return top;
}

function dropRangeLines(name) {
  for (const f of ['/etc/subuid', '/etc/subgid']) {
    if (!fs.existsSync(f)) continue;
    const text = fs.readFileSync(f, 'utf8');
    const kept = text.split('\n').filter((l) => !l.startsWith(`${name}:`)).join('\n');
    if (kept !== text) fs.writeFileSync(f, kept);
  }
}

before(async () => {
  if (skip) return;
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-rootless-'));
  fs.chmodSync(work, 0o755);
  const home = path.join(work, 'home');
  const home2 = path.join(work, 'home2');
  fs.mkdirSync(home);
  fs.mkdirSync(home2);
  sh('useradd', ['-M', '-d', home, '-s', '/bin/sh', '-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0', builder]);
  made.push(builder);
  sh('useradd', ['-M', '-d', home2, '-s', '/bin/sh', '-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0', single]);
  made.push(single);
  const start = freeRange();
  sh('usermod', ['--add-subuids', `${start}-${start + 65535}`, '--add-subgids', `${start}-${start + 65535}`, builder]);
  ids = {
    uid: Number(sh('id', ['-u', builder]).trim()),
    gid: Number(sh('id', ['-g', builder]).trim()),
    sub: subRange('/etc/subuid', builder),
    subg: subRange('/etc/subgid', builder),
  };
  assert.deepEqual(ids.sub, { start, count: 65536 });
  assert.equal(subRange('/etc/subuid', single), null);
  fs.chownSync(home, ids.uid, ids.gid);
  fs.chownSync(home2, Number(sh('id', ['-u', single]).trim()), Number(sh('id', ['-g', single]).trim()));

  // The image: busybox, sh, a bash that is busybox's sh, and an account svc (2000).
  const rootfs = path.join(work, 'rootfs');
  sh('dpkg-deb', ['-x', path.join(debs, busyboxDeb), rootfs]);
  fs.symlinkSync('busybox', path.join(rootfs, 'bin', 'sh'));
  fs.writeFileSync(path.join(rootfs, 'bin', 'bash'), '#!/bin/busybox sh\nexec /bin/busybox sh "$@"\n', { mode: 0o755 });
  fs.mkdirSync(path.join(rootfs, 'tmp'));
  fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
  fs.mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nsvc:x:2000:2000::/home/svc:/bin/sh\n');
  fs.writeFileSync(path.join(rootfs, 'etc', 'group'), 'root:x:0:\nsvc:x:2000:\n');
  // A file of the image owned by svc: the unpack keeps owners.
  fs.mkdirSync(path.join(rootfs, 'srv'));
  fs.writeFileSync(path.join(rootfs, 'srv', 'data'), 'svc data\n');
  fs.chownSync(path.join(rootfs, 'srv', 'data'), 2000, 2000);
  // Two names of one file (the install shifts its owner once).
  fs.linkSync(path.join(rootfs, 'bin', 'busybox'), path.join(rootfs, 'bin', 'bb-link'));
  // A set-uid file (the install's chown must not clear the bit).
  fs.copyFileSync(path.join(rootfs, 'bin', 'busybox'), path.join(rootfs, 'bin', 'su'));
  fs.chmodSync(path.join(rootfs, 'bin', 'su'), 0o4755);
  // A file with a capability (cap_net_raw+ep, as Debian's ping has).
  fs.copyFileSync(path.join(rootfs, 'bin', 'busybox'), path.join(rootfs, 'bin', 'ping'));
  sh('setfattr', ['-n', 'security.capability', '-v', capV2, path.join(rootfs, 'bin', 'ping')]);
  layout = path.join(work, 'layout');
  sh('umoci', ['init', '--layout', layout]);
  sh('umoci', ['new', '--image', `${layout}:latest`]);
  sh('umoci', ['insert', '--image', `${layout}:latest`, rootfs, '/']);
  sh('umoci', ['config', '--image', `${layout}:latest`, '--config.env', 'PATH=/bin:/usr/bin',
    '--config.cmd', '/bin/sh', '--config.cmd', '-c', '--config.cmd', 'sleep 600']);
  archive = path.join(work, 'tiny.tar');
  sh('skopeo', ['copy', '-q', `oci:${layout}:latest`, `docker-archive:${archive}:tiny:1`]);

  ctx = path.join(work, 'ctx');
  fs.mkdirSync(ctx);
  fs.writeFileSync(path.join(ctx, 'hello.txt'), 'hello from the context\n');
  fs.writeFileSync(path.join(ctx, 'Dockerfile'), [
    `FROM oci-layout:${layout}:latest`,
    // As the image's root: what that root is on the host.
    'RUN cat /proc/self/uid_map > /uidmap-root && mkdir -p /home/svc && chown svc:svc /home/svc',
    // The step's /dev: the host's nodes bound in (mknod is refused in a user namespace).
    'RUN echo gone > /dev/null && head -c 8 /dev/urandom | wc -c > /urandom-bytes',
    'USER svc',
    'RUN id -u > /home/svc/made-by && cat /proc/self/uid_map > /home/svc/uidmap',
    'COPY --chown=svc hello.txt /home/svc/hello.txt',
    'CMD ["/bin/sh", "-c", "sleep 600"]',
    '',
  ].join('\n'));
  sh('chmod', ['-R', 'a+rX', rootfs, layout, ctx]);
  fs.chmodSync(archive, 0o644);
  userRoot = path.join(home, '.local', 'share', 'coppice', 'templates');

  gw = await startGateway();
  ({ Sandbox } = await loadSdk());
});

after(async () => {
  await gw?.stop();
  for (const u of made) {
    spawnSync('userdel', [u]);
    dropRangeLines(u);
  }
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

// Runs the CLI as `user` (runuser: its uid, gid and groups, HOME its home).
function coppiceAs(user, args, { home = user === builder ? path.join(work, 'home') : path.join(work, 'home2') } = {}) {
  return new Promise((resolve) => {
    execFile('runuser', ['-u', user, '--', 'env', '-i', `HOME=${home}`, `PATH=${process.env.PATH}`, cliBin, ...args],
      { cwd: work, timeout: 300_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
      });
  });
}

function coppiceRoot(args) {
  return new Promise((resolve) => {
    execFile(cliBin, args, { env: { PATH: process.env.PATH, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY },
      timeout: 300_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const owner = (p) => { const s = fs.lstatSync(p); return `${s.uid}:${s.gid}`; };
const hostOf = (inside) => (inside === 0 ? `${ids.uid}:${ids.gid}` : `${ids.sub.start + inside - 1}:${ids.subg.start + inside - 1}`);

test('a docker-archive builds rootless into the user\'s own templates root, owned by its ids', opt, async () => {
  const r = await coppiceAs(builder, ['template', 'build', '--docker-archive', archive, '--name', 'rl-archive']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`rootless: a user namespace where root is ${builder}`));
  assert.match(r.stderr, /coppice template install .*rl-archive/);
  const root = path.join(userRoot, 'rl-archive', 'rootfs');
  assert.equal(owner(root), hostOf(0));
  assert.equal(owner(path.join(root, 'bin', 'busybox')), hostOf(0));
  assert.equal(owner(path.join(root, 'srv', 'data')), hostOf(2000), 'the image\'s svc file');
  assert.equal(owner(path.join(root, 'home', 'user')), hostOf(1000), 'every template\'s user');
  assert.match(fs.readFileSync(path.join(userRoot, 'rl-archive', 'template.toml'), 'utf8'), /^source = "image"$/m);
  // Nothing of it is host root's.
  const rootOwned = sh('find', [path.join(userRoot, 'rl-archive'), '-uid', '0', '-o', '-gid', '0']).trim();
  assert.equal(rootOwned, '');

  // With root's HOME (as `runuser -u` leaves it) the build still goes to the
  // user's own home; again, it replaces the build of that name.
  const again = await coppiceAs(builder, ['template', 'build', '--docker-archive', archive, '--name', 'rl-archive', '--force'],
    { home: '/root' });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`^built ${userRoot}/rl-archive `));
  assert.deepEqual(fs.readdirSync(path.join(userRoot, '.retired')), [], 'nothing runs on a rootless root: the old build went');
});

test(`[${sdkName}] a Dockerfile with RUN builds rootless (RUN never host root), installs, and a sandbox runs on it`, opt, async () => {
  const r = await coppiceAs(builder, ['template', 'build', '--dockerfile', path.join(ctx, 'Dockerfile'), '--name', 'rl-df']);
  assert.equal(r.code, 0, r.stderr);
  const dir = path.join(userRoot, 'rl-df');
  const root = path.join(dir, 'rootfs');
  // The RUN steps' user namespace: its root is the user, its other ids the
  // user's range; host root is not in it.
  const expectMap = new RegExp(`^\\s*0\\s+${ids.uid}\\s+1\\n\\s*1\\s+${ids.sub.start}\\s+65536\\n$`);
  assert.match(fs.readFileSync(path.join(root, 'uidmap-root'), 'utf8'), expectMap);
  assert.match(fs.readFileSync(path.join(root, 'home', 'svc', 'uidmap'), 'utf8'), expectMap);
  assert.equal(fs.readFileSync(path.join(root, 'home', 'svc', 'made-by'), 'utf8'), '2000\n');
  assert.equal(fs.readFileSync(path.join(root, 'urandom-bytes'), 'utf8').trim(), '8');
  assert.deepEqual(fs.readdirSync(path.join(root, 'dev')), [], 'the step\'s /dev went with it');
  assert.equal(owner(path.join(root, 'uidmap-root')), hostOf(0));
  assert.equal(owner(path.join(root, 'home', 'svc', 'made-by')), hostOf(2000), 'made by RUN as svc');
  assert.equal(owner(path.join(root, 'home', 'svc', 'hello.txt')), hostOf(2000), 'COPY --chown=svc');
  assert.equal(sh('find', [dir, '-uid', '0', '-o', '-gid', '0']).trim(), '');

  // Root takes it into the gateway's templates root, owners shifted back.
  const templatesDir = path.join(gw.stateDir, 'templates');
  const inst = await coppiceRoot(['template', 'install', dir, '--templates', templatesDir]);
  assert.equal(inst.code, 0, inst.stderr);
  assert.match(inst.stdout, new RegExp(`^installed .*/rl-df \\(built by ${builder}\\)`));
  assert.match(inst.stderr, /reloaded and serves rl-df/);
  const installed = path.join(templatesDir, 'rl-df');
  assert.equal(fs.statSync(installed).mode & 0o777, 0o700, 'root\'s alone: host users reach none of its files');
  assert.equal(owner(path.join(installed, 'rootfs')), '0:0');
  assert.equal(owner(path.join(installed, 'rootfs', 'bin', 'busybox')), '0:0');
  assert.equal(fs.statSync(path.join(installed, 'rootfs', 'bin', 'bb-link')).ino,
    fs.statSync(path.join(installed, 'rootfs', 'bin', 'busybox')).ino, 'still one file');
  assert.equal(owner(path.join(installed, 'rootfs', 'home', 'svc', 'made-by')), '2000:2000');
  assert.equal(owner(path.join(installed, 'rootfs', 'home', 'user')), '1000:1000');
  assert.equal(owner(path.join(installed, 'rootfs', 'srv', 'data')), '2000:2000');
  // The capability the build's root set (version 3, for its namespace) is
  // the plain one a root build has.
  assert.equal(capOf(path.join(installed, 'rootfs', 'bin', 'ping')), capV2);
  assert.equal(fs.statSync(path.join(installed, 'rootfs', 'bin', 'su')).mode & 0o7777, 0o4755);
  // The user's build is left as it was.
  assert.equal(owner(path.join(root, 'home', 'svc', 'made-by')), hostOf(2000));

  const sbx = await Sandbox.create('rl-df', gw.opts);
  try {
    const out = await sbx.commands.run('cat /home/svc/made-by /home/svc/hello.txt; stat -c "%u:%g %U" /home/svc/made-by /srv/data /home/user; id -un');
    assert.equal(out.stdout, '2000\nhello from the context\n2000:2000 svc\n2000:2000 svc\n1000:1000 user\nsvc\n', 'commands run as the Dockerfile\'s USER');
  } finally {
    await sbx.kill();
  }
});

const regSkip = skip || (have('docker-registry') ? null : 'missing docker-registry (scripts/deps.sh installs it)');
test('an image from a loopback registry builds rootless (skopeo with the user\'s configuration, not host root\'s)',
  regSkip ? { skip: regSkip } : {}, async () => {
  const port = await freePort();
  const cfg = path.join(work, 'registry.yml');
  fs.writeFileSync(cfg, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/registry\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const registry = spawn('docker-registry', ['serve', cfg], { stdio: 'ignore' });
  try {
    const until = Date.now() + 15000;
    for (;;) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/v2/`)).ok) break;
      } catch {}
      if (Date.now() > until) throw new Error('docker-registry did not start');
      await sleep(50);
    }
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://127.0.0.1:${port}/tiny:1`]);
    const r = await coppiceAs(builder, ['template', 'build', '--image', `127.0.0.1:${port}/tiny:1`, '--name', 'rl-registry']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(owner(path.join(userRoot, 'rl-registry', 'rootfs', 'srv', 'data')), hostOf(2000));
    const rm = await coppiceAs(builder, ['template', 'rm', '--rootless', 'rl-registry']);
    assert.equal(rm.code, 0, rm.stderr);
  } finally {
    registry.kill('SIGTERM');
    await new Promise((res) => (registry.exitCode !== null ? res() : registry.on('exit', res)));
  }
});

test('refused rootless, with the reason: a Debian recipe, a user without a subordinate range', opt, async () => {
  const recipe = path.join(sourceDir, 'templates', 'recipes', 'base.toml');
  let r = await coppiceAs(builder, ['template', 'build', recipe, '--templates', path.join(work, 'home', 'recipes')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /a Debian recipe cannot be built rootless: mmdebstrap needs real root/);
  assert.equal(fs.existsSync(path.join(work, 'home', 'recipes')), false);

  r = await coppiceAs(single, ['template', 'build', '--docker-archive', archive, '--name', 'rl-single']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`cannot build rootless: ${single} has no range in /etc/subuid: .*single id cannot hold them all`));
  assert.equal(fs.existsSync(path.join(work, 'home2', '.local')), false, 'nothing made');

  // --rootless as root says how to run it instead.
  r = await coppiceRoot(['template', 'build', '--rootless', '--docker-archive', archive, '--name', 'rl-root']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--rootless as root: run the build as the user/);
});

test('install refuses a tree with a file the builder does not own, and leaves the templates root as it was', opt, async () => {
  const dir = path.join(userRoot, 'rl-archive');
  assert.ok(fs.existsSync(dir), 'needs the build of the first test');
  const templatesDir = path.join(gw.stateDir, 'templates');
  const before = fs.readdirSync(templatesDir).sort();
  // A file of host root's inside the user's build (as a hard link to a file
  // the user may not read would be, were hard links to others' files allowed).
  const planted = path.join(dir, 'rootfs', 'srv', 'planted');
  fs.writeFileSync(planted, 'secret\n', { mode: 0o600 });
  try {
    const r = await coppiceRoot(['template', 'install', dir, '--templates', templatesDir, '--name', 'rl-bad']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\/srv\/planted is owned by uid 0, gid 0, neither the builder's nor in its subordinate range/);
    assert.deepEqual(fs.readdirSync(templatesDir).sort(), before, 'no template, no build directory left');
  } finally {
    fs.rmSync(planted);
  }
  // A device node, even one of the builder's ids (as only root could have made it).
  const dev = path.join(dir, 'rootfs', 'srv', 'null');
  sh('mknod', [dev, 'c', '1', '3']);
  fs.chownSync(dev, ids.uid, ids.gid);
  try {
    const r = await coppiceRoot(['template', 'install', dir, '--templates', templatesDir, '--name', 'rl-bad']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\/srv\/null is a device node, which a rootless build cannot have made/);
    assert.deepEqual(fs.readdirSync(templatesDir).sort(), before);
  } finally {
    fs.rmSync(dev);
  }
  // Not root: refused.
  const r = await coppiceAs(builder, ['template', 'install', dir, '--templates', path.join(work, 'home', 'elsewhere')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /needs root/);
});

test('the user removes a rootless build (files of its subordinate ids too) with template rm --rootless', opt, async () => {
  for (const name of ['rl-archive', 'rl-df']) {
    const dir = path.join(userRoot, name);
    assert.ok(fs.existsSync(dir), `needs the build ${name} of the tests above`);
    const r = await coppiceAs(builder, ['template', 'rm', '--rootless', name]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.existsSync(dir), false);
  }
  // No template names the unpacked image any more: it went too.
  assert.deepEqual(fs.readdirSync(path.join(userRoot, '.images')), []);
  const r = await coppiceAs(builder, ['template', 'rm', '--rootless', 'rl-archive']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no template rl-archive in /);
});
