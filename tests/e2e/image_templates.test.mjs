// Templates from OCI images and Dockerfiles, end to end: the test makes a
// tiny image itself (busybox from the local test packages, umoci), serves it
// from a registry it starts on loopback (Debian's docker-registry), builds
// templates with `coppice template build --image / --docker-archive /
// --oci-layout / --dockerfile`, and runs them with the real SDK. Bad input
// (a missing image, a corrupted blob, an unknown instruction, a failing RUN,
// a layer over the disk limit) fails with a clear error and leaves the
// template of that name as it was. `coppice template rm` is refused while a
// sandbox uses the template. Prints build times and the disk two templates
// of one base share. Needs root, skopeo, umoci, docker-registry and the test
// packages; nothing leaves the machine.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, buildDir, loadSdk, sdkName, freePort, sleep, pidsMatching, TEST_API_KEY } from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
const debs = process.env.COPPICE_TEST_DEBS || '/var/cache/coppice/test-debs';
const have = (bin) => ['/usr/bin', '/usr/sbin', '/bin'].some((d) => fs.existsSync(path.join(d, bin)));
const busyboxDeb = fs.existsSync(debs) ? fs.readdirSync(debs).find((f) => f.startsWith('busybox-static_')) : null;
const skip = gatewaySkipReason() ||
  (fs.existsSync(cliBin) ? null : `missing ${cliBin}`) ||
  (['skopeo', 'umoci', 'docker-registry', 'dpkg-deb'].find((b) => !have(b)) ?
    `missing ${['skopeo', 'umoci', 'docker-registry', 'dpkg-deb'].find((b) => !have(b))} (scripts/deps.sh installs it)` : null) ||
  (busyboxDeb ? null : `no busybox-static package in ${debs} (run scripts/test-debs.sh)`);
const opt = skip ? { skip } : {};

let gw, Sandbox, templatesDir, work, registry, regPort, layout, archive;
let registryLog = '';  // its access log: which blobs were fetched
const figures = [];

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }).toString();
}

// An OCI layout at `dir` (tag `tag`) holding `rootfs` as one layer, with a config.
function makeImage(dir, tag, rootfs, config = []) {
  if (!fs.existsSync(dir)) sh('umoci', ['init', '--layout', dir]);
  sh('umoci', ['new', '--image', `${dir}:${tag}`]);
  sh('umoci', ['insert', '--image', `${dir}:${tag}`, rootfs, '/']);
  if (config.length) sh('umoci', ['config', '--image', `${dir}:${tag}`, ...config]);
}

function push(dir, tag, ref) {
  sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${dir}:${tag}`, `docker://127.0.0.1:${regPort}/${ref}`]);
}

before(async () => {
  if (skip) return;
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-images-'));
  // The image's tree: busybox, sh, and a bash that is busybox's sh (the SDK
  // runs commands with /bin/bash -l -c).
  const rootfs = path.join(work, 'rootfs');
  sh('dpkg-deb', ['-x', path.join(debs, busyboxDeb), rootfs]);
  fs.symlinkSync('busybox', path.join(rootfs, 'bin', 'sh'));
  fs.writeFileSync(path.join(rootfs, 'bin', 'bash'), '#!/bin/busybox sh\nexec /bin/busybox sh "$@"\n', { mode: 0o755 });
  fs.mkdirSync(path.join(rootfs, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
  fs.mkdirSync(path.join(rootfs, 'srv'));
  layout = path.join(work, 'layout');
  makeImage(layout, 'latest', rootfs, ['--config.env', 'GREETING=hello from the image', '--config.env', 'PATH=/bin:/usr/bin',
    '--config.workingdir', '/srv', '--config.cmd', '/bin/sh', '--config.cmd', '-c',
    '--config.cmd', 'echo started as $(busybox id -un) in $(busybox pwd) > /tmp/started']);
  // A layer of 3 MiB that does not compress, for the disk limit.
  const big = path.join(work, 'big');
  fs.mkdirSync(big);
  fs.writeFileSync(path.join(big, 'blob.bin'), crypto.randomBytes(3 << 20));
  sh('umoci', ['new', '--image', `${layout}:big`]);
  sh('umoci', ['insert', '--image', `${layout}:big`, big, '/data']);

  // The registry, on loopback only, with its storage in the temp dir.
  regPort = await freePort();
  const cfg = path.join(work, 'registry.yml');
  fs.writeFileSync(cfg, `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${work}/registry\nhttp:\n  addr: 127.0.0.1:${regPort}\n`);
  registry = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  registry.stdout.on('data', (d) => { registryLog += d; });
  registry.stderr.on('data', (d) => { registryLog += d; });
  const until = Date.now() + 15000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${regPort}/v2/`)).ok) break;
    } catch {}
    if (Date.now() > until) throw new Error('docker-registry did not start');
    await sleep(50);
  }
  push(layout, 'latest', 'tiny:1');
  push(layout, 'big', 'tiny:big');
  archive = path.join(work, 'tiny.tar');
  sh('skopeo', ['copy', '-q', `oci:${layout}:latest`, `docker-archive:${archive}:tiny:1`]);

  gw = await startGateway();
  templatesDir = path.join(gw.stateDir, 'templates');
  ({ Sandbox } = await loadSdk());
});

after(async () => {
  if (figures.length) console.log(figures.join('\n'));
  await gw?.stop();
  if (registry && registry.exitCode === null) {
    registry.kill('SIGTERM');
    await new Promise((r) => registry.on('exit', r));
  }
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const env = () => ({ PATH: process.env.PATH, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY });

function coppice(args) {
  return new Promise((resolve) => {
    execFile(cliBin, args, { env: env(), timeout: 300_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function build(args, root = templatesDir) {
  const t0 = performance.now();
  const r = await coppice(['template', 'build', '--templates', root, ...args]);
  return { ...r, ms: performance.now() - t0 };
}

// What a build may leave beside the templates: the layer cache, its lock,
// the unpacked images and retired builds; never a build directory.
const leftovers = () => fs.readdirSync(templatesDir).filter((n) => n.startsWith('.') &&
  !['.oci', '.oci.lock', '.images', '.retired'].includes(n));

const toml = (name) => fs.readFileSync(path.join(templatesDir, name, 'template.toml'), 'utf8');
const ref = (tag) => `127.0.0.1:${regPort}/tiny:${tag}`;

test(`[${sdkName}] a template from an image in a loopback registry runs with the image's env, workdir and start command`, opt, async () => {
  const r = await build(['--image', ref('1'), '--name', 'tiny']);
  assert.equal(r.code, 0, r.stderr);
  figures.push(`figure: build from an image, cold layer cache: ${r.ms.toFixed(0)} ms`);
  assert.match(r.stdout, /^built .*\/tiny in [0-9.]+ s: [0-9.]+ MiB \(image sha256:[0-9a-f]{64}\)\n$/);
  assert.match(r.stderr, /Copying blob/);
  assert.match(r.stderr, /reloaded and serves tiny/);
  assert.deepEqual(leftovers(), []);
  const t = toml('tiny');
  assert.match(t, /^source = "image"$/m);
  assert.match(t, /^workdir = "\/srv"$/m);
  assert.match(t, /^image_digest = "sha256:[0-9a-f]{64}"$/m);
  assert.match(t, /^env = \["GREETING=hello from the image", "PATH=\/bin:\/usr\/bin"\]$/m);

  const sbx = await Sandbox.create('tiny', gw.opts);
  try {
    const out = await sbx.commands.run('echo "$GREETING"; pwd; id -un');
    assert.equal(out.stdout, 'hello from the image\n/srv\nuser\n');
    // The image's Cmd ran as its start command (root, in its WorkingDir).
    let started = '';
    for (let i = 0; i < 50 && !started; i++) {
      started = await sbx.files.read('/tmp/started').catch(() => '');
      if (!started) await sleep(100);
    }
    assert.equal(started, 'started as root in /srv\n');
  } finally {
    await sbx.kill();
  }

  // The same image again: nothing to do.
  const again = await build(['--image', ref('1'), '--name', 'tiny']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /is up to date \(image sha256:[0-9a-f]{64}\), nothing to do/);
  assert.equal(toml('tiny'), t);
});

test('two templates of one image share its files on disk; warm builds', opt, async () => {
  assert.ok(fs.existsSync(path.join(templatesDir, 'tiny')), 'needs the template of the first test');
  const r = await build(['--image', ref('1'), '--name', 'tiny-two']);
  assert.equal(r.code, 0, r.stderr);
  figures.push(`figure: build from an image, warm layer cache (another template of the same image): ${r.ms.toFixed(0)} ms`);
  assert.match(r.stderr, /the image is unpacked already/);
  // The registry served the layer once, for the first template: the second
  // found it in the layer cache.
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  const m = index.manifests.find((x) => x.annotations['org.opencontainers.image.ref.name'] === 'latest');
  const layer = JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', m.digest.slice(7)), 'utf8')).layers[0].digest;
  assert.equal(registryLog.split(`GET /v2/tiny/blobs/${layer}`).length - 1, 1, 'layer fetches');
  const a = fs.statSync(path.join(templatesDir, 'tiny', 'rootfs', 'bin', 'busybox'));
  const b = fs.statSync(path.join(templatesDir, 'tiny-two', 'rootfs', 'bin', 'busybox'));
  assert.equal(a.ino, b.ino, 'the same inode: one copy on disk');
  // Their own files are their own.
  const pa = fs.statSync(path.join(templatesDir, 'tiny', 'rootfs', 'etc', 'passwd'));
  const pb = fs.statSync(path.join(templatesDir, 'tiny-two', 'rootfs', 'etc', 'passwd'));
  assert.notEqual(pa.ino, pb.ino);
  assert.deepEqual(fs.readdirSync(path.join(templatesDir, '.images')).length, 1);
  const du = (...dirs) => Number(sh('du', ['-skx', '--total', ...dirs]).trim().split('\n').pop().split('\t')[0]);
  const one = du(path.join(templatesDir, 'tiny', 'rootfs'));
  const both = du(path.join(templatesDir, 'tiny', 'rootfs'), path.join(templatesDir, 'tiny-two', 'rootfs'));
  figures.push(`figure: disk, one template ${one} KiB, two templates of the same image together ${both} KiB`);
  assert.ok(both < one * 1.5, `two templates take ${both} KiB, one ${one} KiB`);
});

test(`[${sdkName}] templates from a docker-archive tar and an OCI layout directory`, opt, async () => {
  let r = await build(['--docker-archive', archive, '--name', 'tiny-archive']);
  assert.equal(r.code, 0, r.stderr);
  r = await build(['--oci-layout', `${layout}:latest`, '--name', 'tiny-layout']);
  assert.equal(r.code, 0, r.stderr);
  // And as a Dockerfile's FROM (a relative path is the context's).
  const ctx = path.join(work, 'local-from');
  fs.mkdirSync(ctx, { recursive: true });
  fs.copyFileSync(archive, path.join(ctx, 'tiny.tar'));
  fs.writeFileSync(path.join(ctx, 'archive.Dockerfile'), 'FROM docker-archive:tiny.tar\nENV FROM_ARCHIVE=1\n');
  fs.writeFileSync(path.join(ctx, 'layout.Dockerfile'), `FROM oci-layout:${layout}:latest\nENV FROM_LAYOUT=1\n`);
  for (const [file, name, key] of [['archive.Dockerfile', 'df-archive', 'FROM_ARCHIVE'], ['layout.Dockerfile', 'df-layout', 'FROM_LAYOUT']]) {
    r = await build(['--dockerfile', path.join(ctx, file), '--name', name]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(toml(name), new RegExp(`"${key}=1"`));
    assert.match(toml(name), /"GREETING=hello from the image"/);
    assert.equal((await coppice(['template', 'rm', name, '--templates', templatesDir])).code, 0);
  }
  for (const name of ['tiny-archive', 'tiny-layout']) {
    const sbx = await Sandbox.create(name, gw.opts);
    try {
      assert.equal((await sbx.commands.run('echo "$GREETING"; busybox ls /bin/busybox')).stdout,
        'hello from the image\n/bin/busybox\n');
    } finally {
      await sbx.kill();
    }
  }
});

test(`[${sdkName}] a template from a Dockerfile: FROM the registry's image, ARG, ENV, WORKDIR, COPY, RUN, USER, CMD`, opt, async () => {
  const ctx = path.join(work, 'ctx');
  fs.mkdirSync(path.join(ctx, 'app'), { recursive: true });
  fs.writeFileSync(path.join(ctx, 'app', 'hello.txt'), 'hello from the context\n');
  fs.writeFileSync(path.join(ctx, 'notes.txt'), 'notes\n');
  fs.writeFileSync(path.join(ctx, 'Dockerfile'), [
    '# syntax=docker/dockerfile:1',
    `ARG BASE=${ref('1')}`,
    'FROM ${BASE}',
    'ARG FLAVOUR=plain',
    'ENV APP_HOME=/opt/app \\',
    '    MODE="two words"',
    'LABEL org.example.note="ignored"',
    'WORKDIR $APP_HOME',
    'COPY app/ ./',
    'COPY --chown=user:user notes.txt /home/user/',
    "RUN echo 'app:x:1500:1500::/home/app:/bin/sh' >> /etc/passwd && \\",
    "    echo 'app:x:1500:' >> /etc/group && busybox mkdir -m 0755 /home/app && busybox chown app:app /home/app && \\",
    '    echo "$FLAVOUR $MODE" > built.txt',
    'RUN ["/bin/busybox", "sh", "-c", "busybox id -un > /tmp/run-as-root"]',
    'USER app',
    'RUN busybox id -un > /tmp/run-as-app',
    'CMD ["/bin/sh", "-c", "echo cmd as $(busybox id -un) > /tmp/cmd"]',
    '',
  ].join('\n'));
  let r = await build(['--dockerfile', path.join(ctx, 'Dockerfile'), '--name', 'from-dockerfile', '--build-arg', 'FLAVOUR=spicy']);
  assert.equal(r.code, 0, r.stderr);
  figures.push(`figure: build from a Dockerfile (2 RUN steps), warm layer cache: ${r.ms.toFixed(0)} ms`);
  assert.match(r.stderr, /step 7\/11 \(line 11\): RUN echo 'app:x:1500/);
  assert.match(r.stderr, /LABEL has no meaning .* ignored/);
  const t = toml('from-dockerfile');
  assert.match(t, /^user = "app"$/m);
  assert.match(t, /^workdir = "\/opt\/app"$/m);
  assert.match(t, /^source = "dockerfile"$/m);

  const sbx = await Sandbox.create('from-dockerfile', gw.opts);
  try {
    const out = await sbx.commands.run('id -un; pwd; echo "$MODE|$GREETING"; cat hello.txt built.txt /tmp/run-as-root /tmp/run-as-app');
    assert.equal(out.stdout, 'app\n/opt/app\ntwo words|hello from the image\nhello from the context\nspicy two words\nroot\napp\n');
    assert.equal((await sbx.commands.run('busybox stat -c %U:%G /home/user/notes.txt')).stdout, 'user:user\n');
    let cmd = '';
    for (let i = 0; i < 50 && !cmd; i++) {
      cmd = await sbx.files.read('/tmp/cmd').catch(() => '');
      if (!cmd) await sleep(100);
    }
    assert.equal(cmd, 'cmd as app\n');
  } finally {
    await sbx.kill();
  }

  // Cold: a templates root of its own, so the image is fetched and unpacked again.
  const cold = fs.mkdtempSync(path.join(work, 'cold-'));
  r = await build(['--dockerfile', path.join(ctx, 'Dockerfile'), '--name', 'from-dockerfile'], cold);
  assert.equal(r.code, 0, r.stderr);
  figures.push(`figure: build from a Dockerfile (2 RUN steps), cold layer cache: ${r.ms.toFixed(0)} ms`);
  r = await build(['--image', ref('1'), '--name', 'cold-image'], fs.mkdtempSync(path.join(work, 'cold-')));
  assert.equal(r.code, 0, r.stderr);
  figures.push(`figure: build from an image, cold layer cache (again): ${r.ms.toFixed(0)} ms`);
});

// Each bad input: the exit status, the message, and the template `tiny` as it was.
async function failsAndLeavesTiny(args, pattern, files = {}) {
  const before = toml('tiny');
  const r = await build([...args, '--name', 'tiny', '--force']);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, pattern);
  assert.match(r.stderr, /the template tiny was left as it was/);
  assert.equal(toml('tiny'), before);
  assert.deepEqual(leftovers(), []);
  // Only images some template uses stay unpacked.
  const used = new Set(fs.readdirSync(templatesDir).filter((n) => !n.startsWith('.'))
    .map((n) => (toml(n).match(/^image_digest = "sha256:([0-9a-f]+)"$/m) || [])[1]).filter(Boolean));
  for (const d of fs.readdirSync(path.join(templatesDir, '.images'))) assert.ok(used.has(d), `${d} left unpacked`);
  return r;
}

test('bad input: each a clear build error, the old template untouched', opt, async () => {
  assert.ok(fs.existsSync(path.join(templatesDir, 'tiny')), 'needs the template of the first test');
  // A missing image.
  await failsAndLeavesTiny(['--image', ref('nope')], /manifest unknown|not found/i);
  // A blob whose content does not match its digest (a layer the cache does
  // not hold yet: one it holds is never read from the source again).
  const bad = path.join(work, 'bad-layout');
  fs.cpSync(layout, bad, { recursive: true });
  const index = JSON.parse(fs.readFileSync(path.join(bad, 'index.json'), 'utf8'));
  const m = index.manifests.find((x) => x.annotations['org.opencontainers.image.ref.name'] === 'big');
  const manifest = JSON.parse(fs.readFileSync(path.join(bad, 'blobs', 'sha256', m.digest.slice(7)), 'utf8'));
  const layer = path.join(bad, 'blobs', 'sha256', manifest.layers[0].digest.slice(7));
  const bytes = fs.readFileSync(layer);
  bytes[bytes.length - 100] ^= 0xff;
  fs.writeFileSync(layer, bytes);
  await failsAndLeavesTiny(['--oci-layout', `${bad}:big`], /digest/i);
  // A layer larger than the build's disk limit (fails before it is fetched).
  await failsAndLeavesTiny(['--image', ref('big'), '--max-size', '2M'], /layer sha256:[0-9a-f]+ is 3\.\d MiB, more than the build's disk limit of 2\.0 MiB \(--max-size\)/);
  // An unknown instruction, a multi-stage build, a failing RUN (its output in the log).
  const dir = path.join(work, 'bad-dockerfiles');
  fs.mkdirSync(dir, { recursive: true });
  const df = (name, lines) => {
    fs.writeFileSync(path.join(dir, name), lines.join('\n') + '\n');
    return ['--dockerfile', path.join(dir, name)];
  };
  await failsAndLeavesTiny(df('unknown', [`FROM ${ref('1')}`, 'RUN true', 'FROBNICATE now']), /line 3: FROBNICATE: unknown instruction/);
  await failsAndLeavesTiny(df('healthcheck', [`FROM ${ref('1')}`, 'HEALTHCHECK CMD true']), /line 2: HEALTHCHECK: is not supported/);
  await failsAndLeavesTiny(df('stages', [`FROM ${ref('1')} AS one`, `FROM ${ref('1')}`, 'COPY --from=one / /']),
    /line 2: FROM: a second FROM: multi-stage builds are not supported/);
  const r = await failsAndLeavesTiny(df('failing', [`FROM ${ref('1')}`, 'RUN echo about to fail >&2; exit 3']),
    /line 2: RUN: .* failed: .*exited with status 3; its last lines:\n {2}about to fail/);
  assert.match(r.stderr, /\| about to fail/);  // also as it happened
  await failsAndLeavesTiny(df('escape', [`FROM ${ref('1')}`, 'COPY ../../etc/passwd /x']), /line 2: COPY: "..\/..\/etc\/passwd" is outside the build context/);
  fs.symlinkSync('/etc', path.join(dir, 'link-out'));
  await failsAndLeavesTiny(df('symlink', [`FROM ${ref('1')}`, 'COPY link-out/passwd /x']), /line 2: COPY: "link-out\/passwd" leads out of the build context/);
  await failsAndLeavesTiny(df('url', [`FROM ${ref('1')}`, 'ADD http://127.0.0.1:1/x /x']), /only files from the build context can be added, not URLs/);
  await failsAndLeavesTiny(df('nouser', [`FROM ${ref('1')}`, 'USER nobody-here']), /line 2: USER: user "nobody-here" is not in the image's \/etc\/passwd/);
  // Flags that make no sense together.
  const both = await coppice(['template', 'build', '--templates', templatesDir, '--image', ref('1'), '--docker-archive', archive, '--name', 'x']);
  assert.notEqual(both.code, 0);
  assert.match(both.stderr, /give one of/);
  const noname = await coppice(['template', 'build', '--templates', templatesDir, '--image', ref('1')]);
  assert.match(noname.stderr, /--name is required/);
  // Still usable.
  const sbx = await Sandbox.create('tiny', gw.opts);
  try {
    assert.equal((await sbx.commands.run('echo still')).stdout, 'still\n');
  } finally {
    await sbx.kill();
  }
});

test('an interrupted Dockerfile build (SIGINT during RUN) stops its step and changes nothing', opt, async () => {
  const before = toml('tiny');
  const dir = path.join(work, 'interrupt');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${ref('1')}\nRUN echo sleeping; busybox sleep 31\n`);
  const child = spawn(cliBin, ['template', 'build', '--templates', templatesDir, '--dockerfile', path.join(dir, 'Dockerfile'),
    '--name', 'tiny', '--force'], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let sent = 0;
  child.stderr.on('data', (d) => {
    stderr += d;
    if (!sent && /\| sleeping/.test(stderr)) {
      sent = Date.now();
      child.kill('SIGINT');
    }
  });
  const code = await new Promise((resolve) => child.on('exit', (c) => resolve(c)));
  assert.ok(sent, stderr);
  assert.equal(code, 130, stderr);
  // At once: the step (PID 1 of its namespace, under an unshare that ignores
  // SIGTERM) is killed, not waited for.
  assert.ok(Date.now() - sent < 10000, `stopped after ${Date.now() - sent} ms`);
  assert.match(stderr, /interrupted; nothing was changed/);
  assert.equal(toml('tiny'), before);
  assert.deepEqual(leftovers(), []);
  assert.deepEqual(pidsMatching('busybox sleep 31'), []);
});

test(`[${sdkName}] coppice template rm is refused while a sandbox uses the template`, opt, async () => {
  assert.ok(fs.existsSync(path.join(templatesDir, 'tiny-two')), 'needs the template of the second test');
  const sbx = await Sandbox.create('tiny-two', gw.opts);
  let r;
  try {
    r = await coppice(['template', 'rm', 'tiny-two', '--templates', templatesDir]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`template tiny-two is used by 1 sandbox\\(es\\) \\(${sbx.sandboxId}\\)`));
    assert.ok(fs.existsSync(path.join(templatesDir, 'tiny-two', 'rootfs')));
  } finally {
    await sbx.kill();
  }
  r = await coppice(['template', 'rm', 'tiny-two', '--templates', templatesDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'removed tiny-two\n');
  assert.ok(!fs.existsSync(path.join(templatesDir, 'tiny-two')));
  const list = await (await fetch(`${gw.url}/templates`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
  assert.ok(!list.some((t) => t.templateID === 'tiny-two'));
  await assert.rejects(Sandbox.create('tiny-two', gw.opts));
  // The shared files stay for the other template of the image.
  assert.ok(fs.existsSync(path.join(templatesDir, 'tiny', 'rootfs', 'bin', 'busybox')));
  r = await coppice(['template', 'rm', 'tiny-two', '--templates', templatesDir]);
  assert.match(r.stderr, /template tiny-two not found/);
  r = await coppice(['template', 'rm', 'base', '--templates', templatesDir]);
  assert.match(r.stderr, /base is the default template/);
  // When no template uses an image any more, its unpacked tree goes.
  for (const n of ['tiny', 'tiny-archive', 'tiny-layout', 'from-dockerfile']) {
    r = await coppice(['template', 'rm', n, '--templates', templatesDir]);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.deepEqual(fs.readdirSync(path.join(templatesDir, '.images')), []);
});
