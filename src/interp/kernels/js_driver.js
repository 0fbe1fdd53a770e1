// The JavaScript (and TypeScript) side of coppice-interp's wrapper kernel
// (coppice_kernel.py): one node process per context, running each cell in
// node's own global scope so state carries over from one run to the next.
//
//   node js_driver.js javascript|typescript
//   stdin:  one JSON request per line: {"code": "..."}
//   $COPPICE_REPLY_FD: one JSON reply per line: {"type":"ready"} once, then per request
//           {"type":"result","data":{mime:..}}?, {"type":"error",..}?, {"type":"done"}
//   fd 1/2: the program's own output (the kernel streams it)
//
// A cell is parsed with acorn (Debian's node-acorn) and rewritten so that it
// may use top-level await and ES module imports: its top-level declarations
// become properties of the global object (so the next cell sees them, and
// declaring a name again replaces it, as in a REPL), imports become dynamic
// imports, and the value of a last expression statement is the cell's result.
// TypeScript is first turned into JavaScript by the typescript package
// (Debian's node-typescript), without type checking.
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');
const vm = require('vm');
const readline = require('readline');
const { createRequire, builtinModules } = require('module');
const { pathToFileURL } = require('url');

const lang = process.argv[2] === 'typescript' ? 'typescript' : 'javascript';
const REPLY_FD = Number(process.env.COPPICE_REPLY_FD || 3);
delete process.env.COPPICE_REPLY_FD;

// Debian installs its node packages here; node from elsewhere may not look there.
const systemModuleDirs = ['/usr/share/nodejs', '/usr/lib/nodejs', '/usr/lib/node_modules'];
function requireSystem(name) {
  try {
    return require(name);
  } catch (e) {
    for (const d of systemModuleDirs) {
      try {
        return require(path.join(d, name));
      } catch (e2) {
        // try the next
      }
    }
    throw e;
  }
}

function reply(obj) {
  const line = JSON.stringify(obj) + '\n';
  const buf = Buffer.from(line);
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(REPLY_FD, buf, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

let acorn;
let ts;
try {
  acorn = requireSystem('acorn');
} catch (e) {
  reply({ type: 'fatal', message: 'the JavaScript kernel needs the acorn package (Debian: node-acorn): ' + e.message });
  process.exit(1);
}
if (lang === 'typescript') {
  try {
    ts = requireSystem('typescript');
  } catch (e) {
    reply({ type: 'fatal', message: 'the TypeScript kernel needs the typescript package (Debian: node-typescript): ' + e.message });
    process.exit(1);
  }
}

// What user code sees as module-level helpers: require and import() from
// the current directory, as a script there would.
function userRequire() {
  return createRequire(path.join(process.cwd(), '[cell]'));
}
globalThis.require = new Proxy(function () {}, {
  apply(_t, _this, args) {
    return userRequire()(...args);
  },
  get(_t, prop) {
    return userRequire()[prop];
  },
});
const builtins = new Set(builtinModules);
globalThis.__coppice_import = async function (spec) {
  if (spec.startsWith('node:') || builtins.has(spec)) return import(spec);
  if (spec.startsWith('file:') || spec.startsWith('data:')) return import(spec);
  let resolved;
  try {
    resolved = userRequire().resolve(spec);
  } catch (e) {
    for (const d of systemModuleDirs) {
      try {
        resolved = require.resolve(path.join(d, spec));
        break;
      } catch (e2) {
        // try the next
      }
    }
    if (!resolved) throw e;
  }
  return import(pathToFileURL(resolved).href);
};

function src(code, node) {
  return code.slice(node.start, node.end);
}

// Names a binding pattern introduces (for `let x;` with no initialiser).
function patternNames(p, out) {
  if (!p) return out;
  switch (p.type) {
    case 'Identifier': out.push(p.name); break;
    case 'ObjectPattern': for (const q of p.properties) patternNames(q.type === 'RestElement' ? q.argument : q.value, out); break;
    case 'ArrayPattern': for (const q of p.elements) patternNames(q, out); break;
    case 'RestElement': patternNames(p.argument, out); break;
    case 'AssignmentPattern': patternNames(p.left, out); break;
    default: break;
  }
  return out;
}

function importStatement(code, node) {
  const from = JSON.stringify(node.source.value);
  const mod = `(await globalThis.__coppice_import(${from}))`;
  if (node.specifiers.length === 0) return `${mod};`;
  const parts = [];
  const named = [];
  for (const s of node.specifiers) {
    if (s.type === 'ImportDefaultSpecifier') {
      parts.push(`${s.local.name} = __m.default;`);
    } else if (s.type === 'ImportNamespaceSpecifier') {
      parts.push(`${s.local.name} = __m;`);
    } else {
      const imported = s.imported.type === 'Literal' ? JSON.stringify(s.imported.value) : s.imported.name;
      named.push(`${s.local.name} = __m[${JSON.stringify(imported.replace(/^"|"$/g, ''))}];`);
    }
  }
  return `{ const __m = ${mod}; ${parts.join(' ')} ${named.join(' ')} }`;
}

function declaration(code, node) {
  // var/let/const -> assignments to globals (sloppy mode creates them).
  if (node.type === 'VariableDeclaration') {
    const out = [];
    for (const d of node.declarations) {
      if (d.init) {
        const target = d.id.type === 'ObjectPattern' ? `(${src(code, d.id)} = (${src(code, d.init)}))` : `${src(code, d.id)} = (${src(code, d.init)})`;
        out.push(`;${target};`);
      } else {
        for (const n of patternNames(d.id, [])) out.push(`globalThis[${JSON.stringify(n)}] = undefined;`);
      }
    }
    return { text: out.join(' ') };
  }
  if (node.type === 'FunctionDeclaration') {
    return { hoist: `globalThis[${JSON.stringify(node.id.name)}] = ${src(code, node)};` };
  }
  if (node.type === 'ClassDeclaration') {
    return { text: `globalThis[${JSON.stringify(node.id.name)}] = ${src(code, node)};` };
  }
  return null;
}

// The cell as the body of an async function: declarations made global,
// imports made dynamic, the last expression returned as {v}.
function rewrite(code) {
  const ast = acorn.parse(code, {
    ecmaVersion: 'latest',
    sourceType: 'module',
    allowAwaitOutsideFunction: true,
    allowReturnOutsideFunction: false,
    allowHashBang: true,
  });
  const hoisted = [];
  const pieces = [];
  let pos = 0;
  const body = ast.body;
  for (let i = 0; i < body.length; i++) {
    let node = body[i];
    pieces.push(code.slice(pos, node.start));
    pos = node.end;
    if (node.type === 'ExportNamedDeclaration' || node.type === 'ExportDefaultDeclaration') {
      if (node.declaration) node = node.declaration;
      else {
        pieces.push(';');
        continue;
      }
    }
    if (node.type === 'ExportAllDeclaration') {
      pieces.push(';');
      continue;
    }
    if (node.type === 'ImportDeclaration') {
      pieces.push(importStatement(code, node));
      continue;
    }
    const d = declaration(code, node);
    if (d) {
      if (d.hoist) hoisted.push(d.hoist);
      else pieces.push(d.text);
      continue;
    }
    if (i === body.length - 1 && node.type === 'ExpressionStatement') {
      pieces.push(`return { v: (${src(code, node.expression)}) };`);
      continue;
    }
    pieces.push(src(code, node));
  }
  pieces.push(code.slice(pos));
  return `(async () => { ${hoisted.join('\n')}\n${pieces.join('')}\n})()`;
}

function transpile(code) {
  if (lang !== 'typescript') return code;
  const out = ts.transpileModule(code, {
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      // Keep imports whose names are only used in later cells.
      preserveValueImports: false,
      verbatimModuleSyntax: false,
      isolatedModules: true,
      sourceMap: false,
    },
    reportDiagnostics: false,
  });
  return out.outputText.replace(/\n?export \{\};\s*$/, '\n');
}

function errorReply(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
    const name = e.name || 'Error';
    const value = e.message !== undefined ? String(e.message) : String(e);
    const stack = typeof e.stack === 'string' ? e.stack : `${name}: ${value}`;
    // The driver's own frames (vm, this file) say nothing about the user's code.
    const lines = stack.split('\n').filter((l) => !/^\s+at /.test(l) || !(/\(node:|js_driver\.js/.test(l)));
    return { type: 'error', ename: name, evalue: value, traceback: lines };
  }
  const text = util.inspect(e);
  return { type: 'error', ename: 'Error', evalue: `Uncaught ${text}`, traceback: [`Uncaught ${text}`] };
}

let current = null; // { reject } of the running cell

async function runCell(code) {
  let js;
  try {
    js = rewrite(transpile(code));
  } catch (e) {
    if (e instanceof SyntaxError) {
      const where = e.loc ? ` (${e.loc.line}:${e.loc.column + 1})` : '';
      const msg = e.message.replace(/ \(\d+:\d+\)$/, '') + where;
      return { type: 'error', ename: 'SyntaxError', evalue: msg, traceback: [`SyntaxError: ${msg}`] };
    }
    return errorReply(e);
  }
  try {
    const promise = vm.runInThisContext(js, { filename: 'cell', breakOnSigint: true, displayErrors: false });
    const interrupted = new Promise((_, reject) => {
      current = { reject };
    });
    const out = await Promise.race([promise, interrupted]);
    if (out && out.v !== undefined) {
      return { type: 'result', data: { 'text/plain': util.inspect(out.v, { depth: 4, colors: false }) } };
    }
    return null;
  } catch (e) {
    if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
      return { type: 'error', ename: 'KeyboardInterrupt', evalue: 'Execution was interrupted', traceback: ['KeyboardInterrupt: Execution was interrupted'] };
    }
    return errorReply(e);
  } finally {
    current = null;
  }
}

// SIGINT while a cell awaits: the cell is abandoned (its promise may still
// settle later, unobserved). While it runs synchronously, breakOnSigint
// stops it instead.
process.on('SIGINT', () => {
  if (current) {
    current.reject({ __interrupt: true });
  }
});

// A promise rejected and never handled must not end the kernel: it is
// reported on stderr, as node's REPL does.
function userStack(e) {
  if (!(e instanceof Error)) return util.inspect(e);
  return String(e.stack).split('\n').filter((l) => !/^\s+at /.test(l) || !(/\(node:|js_driver\.js|node:internal/.test(l))).join('\n');
}
process.on('unhandledRejection', (e) => {
  if (e && e.__interrupt) return;
  process.stderr.write(`Uncaught (in promise) ${userStack(e)}\n`);
});
process.on('uncaughtException', (e) => {
  process.stderr.write(`Uncaught ${userStack(e)}\n`);
});

const input = fs.createReadStream(null, { fd: 0 });
const rl = readline.createInterface({ input, crlfDelay: Infinity });
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const req = queue.shift();
    let r;
    try {
      r = await runCell(String(req.code ?? ''));
    } catch (e) {
      r = errorReply(e);
    }
    if (r && r.type === 'error' && r.ename === 'Error' && r.evalue === 'Uncaught { __interrupt: true }') {
      r = { type: 'error', ename: 'KeyboardInterrupt', evalue: 'Execution was interrupted', traceback: ['KeyboardInterrupt: Execution was interrupted'] };
    }
    // One turn of the event loop first, so that a promise the cell
    // rejected without handling is reported as part of this run.
    await new Promise((resolve) => setImmediate(resolve));
    if (r) reply(r);
    reply({ type: 'done' });
  }
  busy = false;
}
rl.on('line', (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    return;
  }
  queue.push(req);
  pump();
});
rl.on('close', () => process.exit(0));
reply({ type: 'ready', language: lang });
