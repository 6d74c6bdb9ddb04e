// Generate the TypeScript declarations of the WIT package's guest side (what a
// plugin imports and exports), with the jco that componentize-js brings.
// Usage: node wit-types.mjs TOOLCHAIN_DIR WIT_DIR OUT_DIR
import { createRequire } from 'node:module';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [toolchain, wit, out] = process.argv.slice(2).map((p) => resolve(p));
const transpile = join(toolchain, 'node_modules/@bytecodealliance/jco-transpile');
const shim = createRequire(join(transpile, 'package.json')).resolve('@bytecodealliance/preview2-shim/filesystem');
const fs = await import(pathToFileURL(shim));
// jco-transpile's type generator reads the WIT through WASI, with no preopens set.
fs._setPreopens({ '/': '/' });
const { generateGuestTypes } = await import(pathToFileURL(join(transpile, 'dist/typegen.js')));
const files = await generateGuestTypes(wit, { worldName: 'batch-handler' });
for (const [name, text] of Object.entries(files)) {
  const path = join(out, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  console.log(path);
}
