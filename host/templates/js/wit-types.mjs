// Generate the TypeScript declarations of the WIT package's guest side (what a
// plugin imports and exports), with the jco that componentize-js brings.
// Usage: node wit-types.mjs TOOLCHAIN_DIR WIT_DIR OUT_DIR
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [toolchain, wit, out] = process.argv.slice(2).map((p) => resolve(p));

// Where Node would find package `name` from directory `from`: the nearest
// node_modules holding it, walking up (npm may nest a package or hoist it).
function findPackage(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) {
      return candidate;
    }
    if (dirname(dir) === dir) {
      throw new Error(`${name} is not installed under ${from}: reinstall the toolchain`);
    }
  }
}

const componentize = findPackage('@bytecodealliance/componentize-js', toolchain);
const jco = findPackage('@bytecodealliance/jco', componentize);
const transpile = findPackage('@bytecodealliance/jco-transpile', jco);
const shim = createRequire(join(transpile, 'package.json')).resolve('@bytecodealliance/preview2-shim/filesystem');
const fs = await import(pathToFileURL(shim));
// jco-transpile's type generator reads the WIT through WASI and sets no preopens
// itself (jco 1.35's `guest-types` fails for that reason): give it the root.
fs._setPreopens({ '/': '/' });
const { generateGuestTypes } = await import(pathToFileURL(join(transpile, 'dist/typegen.js')));
const files = await generateGuestTypes(wit, { worldName: 'batch-handler' });
for (const [name, text] of Object.entries(files)) {
  const path = join(out, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  console.log(path);
}
