// Vite build for the filmless viewer. The EMR serves dist/ under /viewer/,
// hence `base`. dicom-image-loader must not be pre-bundled (its web worker
// and WASM codecs are resolved relative to its own files) and its worker is
// an ES module.
import { readFileSync } from 'node:fs';
import { defineConfig } from 'vite';

// src/early.js (the first stage: early requests and the preview of the
// first slice) goes inline into index.html, so it runs without waiting for
// another round trip. viewer/assets.py allows it in the Content-Security-
// Policy by its hash.
function inlineEarlyScript() {
  return {
    name: 'filmless-inline-early-script',
    transformIndexHtml: {
      order: 'pre',
      handler(html) {
        const code = readFileSync(new URL('./src/early.js', import.meta.url), 'utf8');
        return html.replace('<!-- early.js -->', () => `<script>${code}</script>`);
      },
    },
  };
}

export default defineConfig({
  base: '/viewer/',
  plugins: [inlineEarlyScript()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 8000,
    reportCompressedSize: false,
  },
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
  },
  worker: {
    format: 'es',
  },
  server: {
    fs: { allow: ['..'] }, // the message catalogue lives in ../emr/i18n
  },
});
