// `coppice template build` end to end: a real mmdebstrap build of a tiny
// busybox template from the local repository scripts/test-debs.sh makes (no
// network), picked up by a running gateway and used through the SDK; a
// cached rebuild; an interrupted rebuild that leaves the template as it was.
// Needs root and the test packages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, buildDir, loadSdk, sdkName, TEST_API_KEY } from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
const debs = process.env.COPPICE_TEST_DEBS || '/var/cache/coppice/test-debs';
const skip = gatewaySkipReason() ||
  (fs.existsSync(cliBin) ? null : `missing ${cliBin}`) ||
  (fs.existsSync(path.join(debs, 'Packages')) ? null : `no test packages in ${debs} (run scripts/test-debs.sh)`);
const opt = skip ? { skip } : {};
const name = `tiny-${process.pid}`;
let gw, Sandbox, templatesDir, recipeDir, recipe;

before(async () => {
  if (skip) return;
  gw = await startGateway();
  templatesDir = path.join(gw.stateDir, 'templates');
  ({ Sandbox } = await loadSdk());
  recipeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-recipe-'));
  // The SDK runs commands with /bin/bash -l -c: busybox's sh stands in.
  fs.writeFileSync(path.join(recipeDir, 'bash'), '#!/bin/busybox sh\nexec /bin/busybox sh "$@"\n', { mode: 0o755 });
  recipe = path.join(recipeDir, `${name}.toml`);
  fs.writeFileSync(recipe, [
    'suite = "bookworm"',
    'variant = "extract"',
    'packages = ["busybox-static"]',
    `sources = ["deb [trusted=yes] copy://${debs} ./"]`,
    'files = ["bash:/bin/bash"]',
    '',
  ].join('\n'));
});
after(async () => {
  await gw?.stop();
  if (recipeDir) fs.rmSync(recipeDir, { recursive: true, force: true });
});

const env = () => ({ PATH: process.env.PATH, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY });

function coppice(args) {
  return new Promise((resolve) => {
    execFile(cliBin, args, { env: env(), timeout: 300_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const leftovers = () => fs.readdirSync(templatesDir).filter((n) => n.startsWith('.'));

test(`[${sdkName}] build a template, use it through the gateway, rebuild it from the cache`, opt, async () => {
  let r = await coppice(['template', 'build', recipe, '--templates', templatesDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^built ${templatesDir}/${name} in [0-9.]+ s: [0-9.]+ MiB \\(recipe [0-9a-f]{12}\\)\\n$`));
  // Steps and mmdebstrap's own progress on stderr; the running gateway was told.
  assert.match(r.stderr, /==> \[1\/4\]/);
  assert.match(r.stderr, /I: extracting archives/);
  assert.match(r.stderr, new RegExp(`reloaded and serves ${name}`));
  assert.deepEqual(leftovers(), []);
  const toml = fs.readFileSync(path.join(templatesDir, name, 'template.toml'), 'utf8');
  assert.match(toml, /^recipe_hash = "[0-9a-f]{64}"$/m);

  const sbx = await Sandbox.create(name, gw.opts);
  try {
    const out = await sbx.commands.run('busybox echo hi; id -un; cat /etc/hostname');
    assert.equal(out.stdout, 'hi\nuser\nsandbox\n');
  } finally {
    await sbx.kill();
  }

  // The same recipe again: nothing to do, and it says so at once.
  const t0 = Date.now();
  r = await coppice(['template', 'build', recipe, '--templates', templatesDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /is up to date .*nothing to do/);
  assert.ok(Date.now() - t0 < 2000, `cached build took ${Date.now() - t0} ms`);
  assert.equal(fs.readFileSync(path.join(templatesDir, name, 'template.toml'), 'utf8'), toml);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  test(`an interrupted rebuild (${signal}) leaves the template and no build directory`, opt, async () => {
    const tomlPath = path.join(templatesDir, name, 'template.toml');
    assert.ok(fs.existsSync(tomlPath), 'needs the template built by the first test');
    const before = fs.readFileSync(tomlPath, 'utf8');
    const child = spawn(cliBin, ['template', 'build', recipe, '--templates', templatesDir, '--force'],
      { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      // Once mmdebstrap is at work: its tree exists and may have mounts.
      if (!sent && /I: /.test(stderr)) {
        sent = true;
        child.kill(signal);
      }
    });
    const code = await new Promise((resolve) => child.on('exit', (c) => resolve(c)));
    assert.ok(sent, stderr);
    assert.equal(code, 130, stderr);
    assert.match(stderr, /interrupted; nothing was changed/);
    assert.equal(fs.readFileSync(tomlPath, 'utf8'), before);
    assert.deepEqual(leftovers(), []);
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(`.${name}.build-`));
    // Still usable.
    const sbx = await Sandbox.create(name, gw.opts);
    try {
      assert.equal((await sbx.commands.run('busybox echo still')).stdout, 'still\n');
    } finally {
      await sbx.kill();
    }
  });
}

test(`[${sdkName}] a rebuild never empties the root of sandboxes running on the old build`, opt, async () => {
  assert.ok(fs.existsSync(path.join(templatesDir, name, 'template.toml')), 'needs the template built by the first test');
  const sbx = await Sandbox.create(name, gw.opts);
  try {
    await sbx.files.write('/home/user/mine.txt', 'kept');
    const before = (await sbx.commands.run('busybox ls /bin | busybox wc -l')).stdout;
    const r = await coppice(['template', 'build', recipe, '--templates', templatesDir, '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /replaced build is at .*\.retired\//);
    // The running sandbox still has every file of its build and its own.
    assert.equal((await sbx.commands.run('busybox ls /bin | busybox wc -l')).stdout, before);
    assert.equal((await sbx.commands.run('busybox echo alive')).stdout, 'alive\n');
    assert.equal(await sbx.files.read('/home/user/mine.txt'), 'kept');
    const retired = path.join(templatesDir, '.retired');
    assert.equal(fs.readdirSync(retired).length, 1, 'the old build waits for its last sandbox');
    // A new sandbox runs on the new build.
    const fresh = await Sandbox.create(name, gw.opts);
    assert.equal((await fresh.commands.run('busybox echo new')).stdout, 'new\n');
    await fresh.kill();
    await sbx.kill();
    // Its last sandbox gone, the old build goes too.
    const until = Date.now() + 10000;
    while (fs.readdirSync(retired).length && Date.now() < until) await new Promise((res) => setTimeout(res, 100));
    assert.deepEqual(fs.readdirSync(retired), []);
    assert.ok(fs.existsSync(path.join(templatesDir, name, 'rootfs', 'bin', 'busybox')));
  } finally {
    await sbx.kill().catch(() => {});
  }
});
