// (Build-time code, run by Vite in node; it lives in src/ so that a change
// to it triggers a rebuild like any source change.)
// Build step: turn src/early.js (the first stage) and src/rules.js (the
// rules it shares with the bundle) into one classic script for index.html.
//
// Why by hand and not with a second bundler pass: the first stage must run
// before any other request, so it is inlined; rules.js is written to be
// pasted (no imports, only `export function` / `export const`), and early.js
// imports only from it. Anything else is refused here, at build time.
import { readFileSync } from 'node:fs';

const RULES_IMPORT = /^import\s*\{[^}]*\}\s*from\s*'\.\/rules\.js';[ \t]*$/m;

export function inlineEarlyCode(earlySource, rulesSource) {
  if (/^\s*import\b/m.test(rulesSource)) throw new Error('src/rules.js must not import anything (it is inlined)');
  if (/^\s*export\s+(default|\{|\*|let|var|class|async)/m.test(rulesSource)) {
    throw new Error('src/rules.js may only use `export function` and `export const` (it is inlined)');
  }
  if (!RULES_IMPORT.test(earlySource)) throw new Error("src/early.js must import its rules from './rules.js'");
  const body = earlySource.replace(RULES_IMPORT, '');
  if (/^\s*(import|export)\b/m.test(body)) throw new Error('src/early.js may import only from ./rules.js');
  const rules = rulesSource.replace(/^export\s+/gm, '');
  // `</script` inside the code would end the inline script early.
  const code = `(function () {\n'use strict';\n${rules}\n${body}\n})();\n`;
  if (/<\/script/i.test(code)) throw new Error('the first stage must not contain "</script"');
  return code;
}

export function readEarlyCode(srcDir) {
  const read = (name) => readFileSync(new URL(name, srcDir), 'utf8');
  return inlineEarlyCode(read('early.js'), read('rules.js'));
}

// Vite plugin: replaces `<!-- early.js -->` in index.html with the script.
export function inlineEarlyScript(srcDir) {
  return {
    name: 'filmless-inline-early-script',
    transformIndexHtml: {
      order: 'pre',
      handler(html) {
        const code = readEarlyCode(srcDir);
        return html.replace('<!-- early.js -->', () => `<script>${code}</script>`);
      },
    },
  };
}

// Vite plugin: a <link rel="modulepreload"> for the bundle's main chunk, so
// the browser downloads and compiles it while early.js fetches the first
// slice; src/boot.js evaluates it after the preview (import('./main.js')).
export function preloadMainChunk() {
  let base = '/';
  return {
    name: 'filmless-preload-main-chunk',
    apply: 'build',
    configResolved(config) {
      base = config.base;
    },
    transformIndexHtml: {
      order: 'post',
      handler(html, ctx) {
        const chunk = Object.values(ctx.bundle || {}).find(
          (c) => c.type === 'chunk' && (c.facadeModuleId || '').endsWith('/src/main.js'),
        );
        if (!chunk) throw new Error('no chunk for src/main.js: boot.js must import it dynamically');
        return [
          { tag: 'link', attrs: { rel: 'modulepreload', href: base + chunk.fileName, crossorigin: '' }, injectTo: 'head' },
        ];
      },
    },
  };
}
