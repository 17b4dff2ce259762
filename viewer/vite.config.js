// Vite build for the filmless viewer. The EMR serves dist/ under /viewer/,
// hence `base`. dicom-image-loader must not be pre-bundled (its web worker
// and WASM codecs are resolved relative to its own files) and its worker is
// an ES module.
import { defineConfig } from 'vite';
import { inlineEarlyScript, preloadMainChunk } from './src/inline-early.js';

// src/early.js (the first stage: early requests and the first slice) goes
// inline into index.html together with src/rules.js, so it runs without
// waiting for another round trip (src/inline-early.js, build-time only). viewer/assets.py allows
// it in the Content-Security-Policy by its hash.
export default defineConfig({
  base: '/viewer/',
  plugins: [inlineEarlyScript(new URL('./src/', import.meta.url)), preloadMainChunk()],
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
