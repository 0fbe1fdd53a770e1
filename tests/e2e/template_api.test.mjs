// E2B's template build API end to end, driven by the SDK's own Template
// class: a template defined in code (an image from a registry the test
// starts on loopback, a copied file, env vars, a RUN step) is built with
// Template.build(), its log lines arrive live through onBuildLogs, and
// Sandbox.create(alias) starts it. Bad input (an image that is not there, a
// failing RUN step, steps Coppice cannot build) fails the build with a clear
// error and leaves the template of that name as it was. A wrong API key is
// 401; another team neither sees a team's template nor builds over it; by
// default only admin keys may build. aptInstall: a Debian image with apt
// (scripts/test-debs.sh) installs a package from a local repository the
// test makes, offline.
// Needs root, skopeo, umoci, docker-registry and the test packages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, buildDir, loadSdk, sdkName, freePort, sleep, TEST_API_KEY } from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
const debs = process.env.COPPICE_TEST_DEBS || '/var/cache/coppice/test-debs';
const have = (bin) => ['/usr/bin', '/usr/sbin', '/bin'].some((d) => fs.existsSync(path.join(d, bin)));
const busyboxDeb = fs.existsSync(debs) ? fs.readdirSync(debs).find((f) => f.startsWith('busybox-static_')) : null;
const tools = ['skopeo', 'umoci', 'docker-registry', 'dpkg-deb', 'tar'];
const skip = gatewaySkipReason() ||
  (fs.existsSync(cliBin) ? null : `missing ${cliBin}`) ||
  (tools.find((b) => !have(b)) ? `missing ${tools.find((b) => !have(b))} (scripts/deps.sh installs it)` : null) ||
  (busyboxDeb ? null : `no busybox-static package in ${debs} (run scripts/test-debs.sh)`);
const opt = skip ? { skip } : {};

const TEAM_B_KEY = 'e2b_' + 'b0b0b0'.repeat(6) + 'beef';
let gw, sdk, work, ctx, registry, regPort;

function sh(cmd, args) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

before(async () => {
  if (skip) return;
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-tplapi-'));
  const rootfs = path.join(work, 'rootfs');
  sh('dpkg-deb', ['-x', path.join(debs, busyboxDeb), rootfs]);
  fs.symlinkSync('busybox', path.join(rootfs, 'bin', 'sh'));
  fs.writeFileSync(path.join(rootfs, 'bin', 'bash'), '#!/bin/busybox sh\nexec /bin/busybox sh "$@"\n', { mode: 0o755 });
  for (const t of ['cat', 'echo', 'id', 'ls', 'mkdir', 'rm']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', t));
  fs.mkdirSync(path.join(rootfs, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
  const layout = path.join(work, 'layout');
  sh('umoci', ['init', '--layout', layout]);
  sh('umoci', ['new', '--image', `${layout}:latest`]);
  sh('umoci', ['insert', '--image', `${layout}:latest`, rootfs, '/']);
  sh('umoci', ['config', '--image', `${layout}:latest`, '--config.env', 'PATH=/bin:/usr/bin']);

  regPort = await freePort();
  const cfg = path.join(work, 'registry.yml');
  fs.writeFileSync(cfg, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/registry\nhttp:\n  addr: 127.0.0.1:${regPort}\n`);
  registry = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', 'ignore', 'ignore'] });
  const until = Date.now() + 15000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${regPort}/v2/`)).ok) break;
    } catch {}
    if (Date.now() > until) throw new Error('docker-registry did not start');
    await sleep(50);
  }
  sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://127.0.0.1:${regPort}/tiny:1`]);

  // The SDK's file context: what COPY steps upload.
  ctx = path.join(work, 'ctx');
  fs.mkdirSync(path.join(ctx, 'conf'), { recursive: true });
  fs.writeFileSync(path.join(ctx, 'hello.txt'), 'hello from the context\n');
  fs.writeFileSync(path.join(ctx, 'conf', 'app.conf'), 'mode = test\n');

  gw = await startGateway({ apiKeys: `${TEST_API_KEY},teamb:${TEAM_B_KEY}`, extraArgs: ['--template-builds', 'teams'] });
  sdk = await loadSdk();
});

after(async () => {
  await gw?.stop();
  if (registry && registry.exitCode === null) {
    registry.kill('SIGTERM');
    await new Promise((r) => registry.on('exit', r));
  }
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const image = () => `127.0.0.1:${regPort}/tiny:1`;
const optsB = () => ({ ...gw.opts, apiKey: TEAM_B_KEY });
const toml = (name) => fs.readFileSync(path.join(gw.stateDir, 'templates', name, 'template.toml'), 'utf8');
const buildIdOf = (name) => /build_id = "([^"]+)"/.exec(toml(name))[1];

function appTemplate() {
  return sdk.Template({ fileContextPath: ctx })
    .fromImage(image())
    .copy('hello.txt', '/opt/app/')
    .copy('conf', '/etc/app')
    .copy('hello.txt', '/opt/app/private.txt', { mode: 0o600, user: 'user' })
    .setEnvs({ GREETING: 'hi there', 'ODD_VALUE': 'a "quoted" $dollar value' })
    .runCmd('echo built-by-run > /opt/app/ran && echo run-step-output-marker')
    .setWorkdir('/opt/app');
}

async function build(template, name, opts = gw.opts) {
  const logs = [];
  const t0 = performance.now();
  let firstLogAt = null;
  try {
    const res = await sdk.Template.build(template, name, {
      ...opts,
      onBuildLogs: (e) => {
        if (firstLogAt === null && /run-step-output-marker|==>/.test(e.message ?? '')) firstLogAt = performance.now();
        logs.push(e.message ?? String(e));
      },
    });
    return { res, logs, ms: performance.now() - t0, firstLogAt: firstLogAt && firstLogAt - t0 };
  } catch (err) {
    return { err, logs, ms: performance.now() - t0 };
  }
}

test(`[${sdkName}] Template.build() from an image with a copied file, env vars and a RUN step; Sandbox.create(alias) runs it`, opt, async () => {
  const r = await build(appTemplate(), 'sdk-app');
  assert.equal(r.err, undefined, `${r.err}\n${r.logs.join('\n')}`);
  assert.equal(r.res.templateId, 'sdk-app');
  // The builder's own lines came through the status endpoint.
  assert.ok(r.logs.some((l) => l.includes('run-step-output-marker')), r.logs.join('\n'));
  assert.ok(r.logs.some((l) => /fetching .*tiny:1/.test(l)), r.logs.join('\n'));
  console.log(`figure: Template.build() of the test template: ${r.ms.toFixed(0)} ms`);

  assert.equal(await sdk.Template.exists('sdk-app', gw.opts), true);
  const sbx = await sdk.Sandbox.create('sdk-app', gw.opts);
  try {
    const out = await sbx.commands.run('cat /opt/app/hello.txt /opt/app/ran /etc/app/app.conf; echo "$GREETING|$ODD_VALUE"; pwd');
    assert.equal(out.stdout,
      'hello from the context\nbuilt-by-run\nmode = test\nhi there|a "quoted" $dollar value\n/opt/app\n');
    const mode = await sbx.commands.run('stat -c "%a %U" /opt/app/private.txt; cat /opt/app/private.txt');
    assert.equal(mode.stdout, '600 user\nhello from the context\n');
  } finally {
    await sbx.kill();
  }
  // The uploads are kept by hash: a rebuild finds them present.
  const again = await build(appTemplate(), 'sdk-app');
  assert.equal(again.err, undefined, `${again.err}`);
  assert.ok(again.logs.some((l) => /Skipping upload of 'hello.txt', already cached/.test(l)), again.logs.join('\n'));
  // The tree the rebuild replaced ran no sandbox: it is gone.
  const retired = path.join(gw.stateDir, 'templates', '.retired');
  assert.deepEqual(fs.existsSync(retired) ? fs.readdirSync(retired) : [], []);
});

test(`[${sdkName}] buildInBackground() and getBuildStatus() with log offsets; tags`, opt, async () => {
  const t = sdk.Template({ fileContextPath: ctx }).fromImage(image()).runCmd('echo background-build');
  const info = await sdk.Template.buildInBackground(t, 'sdk-bg:v1', gw.opts);
  assert.equal(info.templateId, 'sdk-bg');
  let seen = [];
  let st;
  for (let i = 0; i < 600; i++) {
    st = await sdk.Template.getBuildStatus(info, { ...gw.opts, logsOffset: seen.length });
    seen = seen.concat(st.logEntries.map((e) => e.message));
    if (st.status === 'ready' || st.status === 'error') break;
    await sleep(200);
  }
  assert.equal(st.status, 'ready', seen.join('\n'));
  // Each line once: the offsets never repeat or skip one.
  assert.equal(seen.filter((l) => /\| background-build$/.test(l)).length, 1, seen.join('\n'));
  const all = await sdk.Template.getBuildStatus(info, { ...gw.opts, logsOffset: 0 });
  assert.deepEqual(all.logEntries.map((e) => e.message), seen);
  const tags = await sdk.Template.getTags('sdk-bg', gw.opts);
  assert.deepEqual(tags.map((x) => x.tag).sort(), ['default', 'v1']);
  const sbx = await sdk.Sandbox.create('sdk-bg:v1', gw.opts);
  await sbx.kill();
  if (sdk.Template.assignTags) {
    const assigned = await sdk.Template.assignTags('sdk-bg:v1', ['prod'], gw.opts);
    assert.equal(assigned.buildId, info.buildId);
    await sdk.Template.removeTags('sdk-bg', 'v1', gw.opts);
    assert.deepEqual((await sdk.Template.getTags('sdk-bg', gw.opts)).map((x) => x.tag).sort(), ['default', 'prod']);
    await assert.rejects(sdk.Template.assignTags('sdk-bg:nope', 'x', gw.opts));
  }
});

test(`[${sdkName}] bad builds fail with a clear error and leave the template as it was`, opt, async () => {
  const before = buildIdOf('sdk-app');
  // An image the registry does not have.
  let r = await build(sdk.Template({ fileContextPath: ctx }).fromImage(`127.0.0.1:${regPort}/nothing:here`), 'sdk-app');
  assert.ok(r.err instanceof sdk.BuildError, String(r.err));
  assert.match(r.err.message, /nothing/);
  assert.equal(buildIdOf('sdk-app'), before);

  // A RUN step that fails: its output is in the log and the error.
  r = await build(sdk.Template({ fileContextPath: ctx }).fromImage(image())
    .runCmd('echo fine').runCmd('echo failing-step-output; exit 3'), 'sdk-app');
  assert.ok(r.err instanceof sdk.BuildError, String(r.err));
  assert.match(r.err.message, /RUN/);
  assert.ok(r.logs.some((l) => l.includes('failing-step-output')), r.logs.join('\n'));
  assert.equal(buildIdOf('sdk-app'), before);

  // Steps Coppice cannot build: a template as the base, registry credentials.
  r = await build(sdk.Template().fromTemplate('base').runCmd('true'), 'sdk-app');
  assert.ok(r.err instanceof sdk.BuildError, String(r.err));
  assert.match(r.err.message, /fromTemplate/);
  r = await build(sdk.Template().fromImage(image(), { username: 'u', password: 'p' }), 'sdk-app');
  assert.match(String(r.err?.message), /fromImageRegistry.*registry/);
  assert.equal(buildIdOf('sdk-app'), before);

  // A step type the SDK may send one day: refused by name, and the build's status says so.
  const h = { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' };
  const made = await (await fetch(`${gw.url}/v3/templates`, { method: 'POST', headers: h, body: JSON.stringify({ name: 'sdk-app' }) })).json();
  const trig = await fetch(`${gw.url}/v2/templates/sdk-app/builds/${made.buildID}`, {
    method: 'POST', headers: h, body: JSON.stringify({ fromImage: image(), steps: [{ type: 'HEALTHCHECK', args: ['true'] }] }),
  });
  assert.equal(trig.status, 400);
  assert.match((await trig.json()).message, /step 1: the step type "HEALTHCHECK" is not supported/);
  const st = await (await fetch(`${gw.url}/templates/sdk-app/builds/${made.buildID}/status`, { headers: h })).json();
  assert.equal(st.status, 'error');
  assert.match(st.reason.message, /HEALTHCHECK/);
  // A local image path is not a base a caller may name.
  const made2 = await (await fetch(`${gw.url}/v3/templates`, { method: 'POST', headers: h, body: JSON.stringify({ name: 'sdk-app' }) })).json();
  const trig2 = await fetch(`${gw.url}/v2/templates/sdk-app/builds/${made2.buildID}`, {
    method: 'POST', headers: h, body: JSON.stringify({ fromImage: 'oci-layout:/etc', steps: [] }),
  });
  assert.equal(trig2.status, 400);
  assert.equal(buildIdOf('sdk-app'), before);

  const sbx = await sdk.Sandbox.create('sdk-app', gw.opts);
  try {
    assert.equal((await sbx.commands.run('cat /opt/app/ran')).stdout, 'built-by-run\n');
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] an upload link is used once; an archive that unpacks too large or holds special files fails the build`, opt, async () => {
  const h = { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' };
  const made = await (await fetch(`${gw.url}/v3/templates`, { method: 'POST', headers: h, body: JSON.stringify({ name: 'sdk-bomb' }) })).json();
  const hash = 'b'.repeat(64);
  const link = await fetch(`${gw.url}/templates/sdk-bomb/files/${hash}`, { headers: h });
  assert.equal(link.status, 201);
  const { present, url } = await link.json();
  assert.equal(present, false);
  // 3 GiB of holes: a few hundred bytes compressed, 3 GiB unpacked.
  const dir = path.join(work, 'bomb');
  fs.mkdirSync(dir);
  fs.closeSync(fs.openSync(path.join(dir, 'big'), 'w'));
  fs.truncateSync(path.join(dir, 'big'), 3 * 2 ** 30);
  sh('tar', ['-S', '-c', '-z', '-f', path.join(work, 'bomb.tar.gz'), '-C', dir, 'big']);
  const body = fs.readFileSync(path.join(work, 'bomb.tar.gz'));
  assert.ok(body.length < 10 << 20);
  assert.equal((await fetch(url, { method: 'PUT', body })).status, 200);
  assert.equal((await fetch(url, { method: 'PUT', body })).status, 404);
  assert.equal((await (await fetch(`${gw.url}/templates/sdk-bomb/files/${hash}`, { headers: h })).json()).present, true);
  const trig = await fetch(`${gw.url}/v2/templates/sdk-bomb/builds/${made.buildID}`, {
    method: 'POST', headers: h,
    body: JSON.stringify({ fromImage: image(), steps: [{ type: 'COPY', args: ['big', '/big'], filesHash: hash }] }),
  });
  assert.equal(trig.status, 202);
  let st;
  for (let i = 0; i < 300; i++) {
    st = await (await fetch(`${gw.url}/templates/sdk-bomb/builds/${made.buildID}/status`, { headers: h })).json();
    if (st.status !== 'building') break;
    await sleep(100);
  }
  assert.equal(st.status, 'error');
  assert.match(st.reason.message, /unpacks to 3072 MiB/);
  assert.ok(!fs.existsSync(path.join(gw.stateDir, 'templates', 'sdk-bomb')));

  // Special files (here a fifo; devices alike) are not copied into a template.
  const made2 = await (await fetch(`${gw.url}/v3/templates`, { method: 'POST', headers: h, body: JSON.stringify({ name: 'sdk-bomb' }) })).json();
  const hash2 = 'c'.repeat(64);
  const { url: url2 } = await (await fetch(`${gw.url}/templates/sdk-bomb/files/${hash2}`, { headers: h })).json();
  const fdir = path.join(work, 'fifo');
  fs.mkdirSync(fdir);
  sh('mkfifo', [path.join(fdir, 'pipe')]);
  sh('tar', ['-c', '-z', '-f', path.join(work, 'fifo.tar.gz'), '-C', fdir, 'pipe']);
  assert.equal((await fetch(url2, { method: 'PUT', body: fs.readFileSync(path.join(work, 'fifo.tar.gz')) })).status, 200);
  assert.equal((await fetch(`${gw.url}/v2/templates/sdk-bomb/builds/${made2.buildID}`, {
    method: 'POST', headers: h,
    body: JSON.stringify({ fromImage: image(), steps: [{ type: 'COPY', args: ['pipe', '/pipe'], filesHash: hash2 }] }),
  })).status, 202);
  for (let i = 0; i < 300; i++) {
    st = await (await fetch(`${gw.url}/templates/sdk-bomb/builds/${made2.buildID}/status`, { headers: h })).json();
    if (st.status !== 'building') break;
    await sleep(100);
  }
  assert.equal(st.status, 'error');
  assert.match(st.reason.message, /special file/);
});

test(`[${sdkName}] a wrong key is 401; another team neither sees nor builds over a team's template`, opt, async () => {
  let r = await build(sdk.Template().fromImage(image()), 'sdk-app', { ...gw.opts, apiKey: 'e2b_' + '0'.repeat(40) });
  assert.ok(r.err, 'a wrong key built');
  assert.match(String(r.err.message), /401|[Uu]nauthori|API key/);
  const bad = await fetch(`${gw.url}/v3/templates`, { method: 'POST', headers: { 'X-API-KEY': 'nope' }, body: '{}' });
  assert.equal(bad.status, 401);

  const before = buildIdOf('sdk-app');
  r = await build(sdk.Template({ fileContextPath: ctx }).fromImage(image()).runCmd('echo team b'), 'sdk-app', optsB());
  assert.ok(r.err, 'team b built over team a\'s template');
  assert.match(r.err.message, /another team/);
  assert.equal(buildIdOf('sdk-app'), before);
  assert.equal(await sdk.Template.exists('sdk-app', optsB()), false);
  const hb = { 'X-API-KEY': TEAM_B_KEY };
  assert.equal((await fetch(`${gw.url}/templates/sdk-app`, { headers: hb })).status, 404);
  const list = await (await fetch(`${gw.url}/templates`, { headers: hb })).json();
  assert.ok(!list.some((t) => t.templateID === 'sdk-app'));
  assert.ok(list.some((t) => t.templateID === 'base'));
  await assert.rejects(sdk.Sandbox.create('sdk-app', optsB()));
  assert.equal((await fetch(`${gw.url}/templates/sdk-app`, { method: 'DELETE', headers: hb })).status, 404);
  // Team b's own template is its own.
  r = await build(sdk.Template({ fileContextPath: ctx }).fromImage(image()).copy('hello.txt', '/b.txt'), 'sdk-b', optsB());
  assert.equal(r.err, undefined, `${r.err}\n${r.logs.join('\n')}`);
  const sbx = await sdk.Sandbox.create('sdk-b', optsB());
  try {
    assert.equal((await sbx.commands.run('cat /b.txt')).stdout, 'hello from the context\n');
  } finally {
    await sbx.kill();
  }
  assert.equal((await fetch(`${gw.url}/templates/sdk-b`, { headers: { 'X-API-KEY': TEST_API_KEY } })).status, 404);
  // An admin key removes any team's template; the name is free again.
  assert.equal((await fetch(`${gw.url}/templates/sdk-b`, { method: 'DELETE', headers: { 'X-API-KEY': TEST_API_KEY } })).status, 204);
  assert.equal(await sdk.Template.exists('sdk-b', optsB()), false);
  // A team's key removes its own.
  r = await build(sdk.Template().fromImage(image()), 'sdk-b2', optsB());
  assert.equal(r.err, undefined, `${r.err}`);
  assert.equal((await fetch(`${gw.url}/templates/sdk-b2`, { method: 'DELETE', headers: hb })).status, 204);
  assert.equal(await sdk.Template.exists('sdk-b2', optsB()), false);
  // No build left a directory or an upload in progress behind.
  const left = fs.readdirSync(path.join(gw.stateDir, 'template-builds')).filter((n) => !['files', 'owners.json'].includes(n));
  assert.deepEqual(left, []);
});

test(`[${sdkName}] without --template-builds teams only admin keys build`, opt, async () => {
  const g2 = await startGateway({ apiKeys: `${TEST_API_KEY},teamb:${TEAM_B_KEY}` });
  try {
    const r = await build(sdk.Template().fromImage(image()), 'sdk-x', { ...g2.opts, apiKey: TEAM_B_KEY });
    assert.ok(r.err, 'a team key built');
    assert.match(r.err.message, /only an admin key may build templates/);
  } finally {
    await g2.stop();
  }
});

// aptInstall: a Debian image with apt (scripts/test-debs.sh makes it with
// mmdebstrap) from the loopback registry, a package made here and put in a
// local repository that a COPY step brings in and a RUN step names as the
// only source; the SDK's aptInstall (apt-get update + install, as root)
// installs it offline; a copied file and an env var beside it.
const aptImageTar = path.join(debs, 'debian-apt.tar');
const aptSkip = skip || (fs.existsSync(aptImageTar) ? null : `no ${aptImageTar} (run scripts/test-debs.sh)`) ||
  (have('dpkg-scanpackages') ? null : 'no dpkg-scanpackages (dpkg-dev)');
test(`[${sdkName}] Template.build() with aptInstall from a local repository, a copied file and an env var`, aptSkip ? { skip: aptSkip } : {}, async () => {
  const rootfs = path.join(work, 'apt-rootfs');
  fs.mkdirSync(rootfs);
  sh('tar', ['-x', '-f', aptImageTar, '-C', rootfs, '--numeric-owner']);
  const layout = path.join(work, 'apt-layout');
  sh('umoci', ['init', '--layout', layout]);
  sh('umoci', ['new', '--image', `${layout}:latest`]);
  sh('umoci', ['insert', '--image', `${layout}:latest`, rootfs, '/']);
  sh('umoci', ['config', '--image', `${layout}:latest`, '--config.env', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin']);
  sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://127.0.0.1:${regPort}/debian-apt:1`]);
  fs.rmSync(rootfs, { recursive: true, force: true });

  // The package and its repository (a flat one), in the SDK's file context.
  const aptCtx = path.join(work, 'apt-ctx');
  const pkg = path.join(work, 'apt-pkg');
  fs.mkdirSync(path.join(pkg, 'DEBIAN'), { recursive: true });
  fs.mkdirSync(path.join(pkg, 'usr', 'share', 'coppice-apt-probe'), { recursive: true });
  fs.writeFileSync(path.join(pkg, 'DEBIAN', 'control'), 'Package: coppice-apt-probe\nVersion: 1.0\nArchitecture: all\n'
    + 'Maintainer: Coppice tests <tests@coppice.invalid>\nDescription: a package the template API tests install\n');
  fs.writeFileSync(path.join(pkg, 'usr', 'share', 'coppice-apt-probe', 'hello'), 'installed by apt\n');
  fs.mkdirSync(path.join(aptCtx, 'repo'), { recursive: true });
  sh('dpkg-deb', ['--root-owner-group', '--build', pkg, path.join(aptCtx, 'repo', 'coppice-apt-probe_1.0_all.deb')]);
  fs.writeFileSync(path.join(aptCtx, 'repo', 'Packages'),
    execFileSync('dpkg-scanpackages', ['.', '/dev/null'], { cwd: path.join(aptCtx, 'repo'), stdio: ['ignore', 'pipe', 'ignore'] }));
  fs.writeFileSync(path.join(aptCtx, 'notes.txt'), 'copied beside the package\n');

  const t = sdk.Template({ fileContextPath: aptCtx })
    .fromImage(`127.0.0.1:${regPort}/debian-apt:1`)
    .copy('repo', '/opt/repo')
    .runCmd('rm -f /etc/apt/sources.list.d/* && echo "deb [trusted=yes] file:/opt/repo ./" > /etc/apt/sources.list', { user: 'root' })
    .aptInstall(['coppice-apt-probe'])
    .copy('notes.txt', '/opt/app/')
    .setEnvs({ APT_TEST: 'from the template' });
  const r = await build(t, 'sdk-apt');
  assert.equal(r.err, undefined, `${r.err}\n${r.logs.join('\n')}`);
  assert.ok(r.logs.some((l) => /Setting up coppice-apt-probe/.test(l)), r.logs.join('\n'));
  console.log(`figure: Template.build() with aptInstall: ${r.ms.toFixed(0)} ms`);
  const sbx = await sdk.Sandbox.create('sdk-apt', gw.opts);
  try {
    const out = await sbx.commands.run("cat /usr/share/coppice-apt-probe/hello /opt/app/notes.txt; echo \"$APT_TEST\"; dpkg-query -W -f='${Status}\\n' coppice-apt-probe");
    assert.equal(out.stdout, 'installed by apt\ncopied beside the package\nfrom the template\ninstall ok installed\n');
  } finally {
    await sbx.kill();
  }
});
