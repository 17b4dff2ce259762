// One-time start-up of Cornerstone3D core, tools and the DICOM image loader.
import {
  init as coreInit,
  cache,
  getRenderingCapabilities,
  setUseCPURendering,
  getShouldUseCPURendering,
} from '@cornerstonejs/core';
import { init as toolsInit } from '@cornerstonejs/tools';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';

// Rendering path: WebGL when there is a GPU; Cornerstone's CPU path when
// WebGL runs on a software rasterizer (SwiftShader, llvmpipe: PCs without a
// usable GPU driver, headless browsers), where it is several times faster.
// `?render=gpu|cpu` overrides the choice, for diagnosis.
function chooseRenderer(wanted) {
  if (wanted === 'cpu' || wanted === 'gpu') {
    setUseCPURendering(wanted === 'cpu');
    return wanted;
  }
  const caps = getRenderingCapabilities();
  if (!caps.webgl || caps.softwareRasterizer) setUseCPURendering(true);
  return getShouldUseCPURendering() ? 'cpu' : 'gpu';
}

// A series whose rescale slope or intercept is not a whole number must not
// go through Cornerstone's CPU path (it maps such values to the wrong grey):
// switch to WebGL for the rest of the session. Returns the renderer in use.
export function rendererFor(stack, current, forced) {
  if (current === 'cpu' && stack.fractionalRescale && forced !== 'cpu') {
    setUseCPURendering(false, true);
    return 'gpu';
  }
  return current;
}

export function initCornerstone({ authHeaders, render }) {
  coreInit();
  const renderer = chooseRenderer(render);
  toolsInit();
  dicomImageLoader.init({
    // Two cores on the reading machines we know; decoding compressed
    // frames is what the workers are for.
    maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)),
    beforeSend: () => ({ ...authHeaders }),
  });
  // 200 CT slices of 512×512 at 2 bytes are 100 MB; leave room for a few series.
  cache.setMaxCacheSize(1024 * 1024 * 1024);
  return renderer;
}
