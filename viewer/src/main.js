// filmless viewer: open ?study=<StudyInstanceUID> over DICOMweb.
// createViewer() builds one viewer on the page; importing this module does
// nothing by itself (src/boot.js creates and starts it).
// Start-up order matters for the time to first image: the series list and
// default series metadata are already on their way (public/early.js) while
// this bundle is parsed; the first slice is shown before anything else
// (thumbnails, prefetch of the rest of the stack) is requested.
import { cache, eventTarget, metaData, getWebWorkerManager, Enums as CoreEnums } from '@cornerstonejs/core';

import { annotation, utilities as toolUtils } from '@cornerstonejs/tools';
import { readConfig, PRESETS, voiRange, centerWidth, presetForKey } from './rules.js';
import { createClient, DicomwebError, tagValue } from './dicomweb.js';
import { initCornerstone, rendererFor } from './cornerstone.js';
import { createToolGroup, setPrimaryTool, primaryToolKey } from './tools.js';
import { Grid } from './grid.js';
import { loadSeriesList, loadSeriesStack } from './study.js';
import { buildToolbar, buildThumbnails, showPageMessage, showNotice, showEmergencyBanner } from './ui.js';
import { t } from './i18n.js';
import { createMeasurementStore } from './measurements.js';
import { REPORTS_ROOT, parseReports, sideEntries } from './reports.js';
import { GRANTS_ROOT, parseGrants, bannerModel } from './emergency.js';

const CsEvents = CoreEnums.Events;

const POLL_MS = 5000;
// A frame that failed to arrive (a dropped connection, a proxy restart) is
// asked for again after these delays; Cornerstone's prefetch by itself only
// tries again when the reader scrolls.
const PREFETCH_RETRY_MS = [1000, 3000, 9000];
const POLL_LIMIT_MS = 10 * 60 * 1000;
// Once a series is decoded the decoder worker sits idle, holding on to the
// frames it copied in and out until its own garbage collection, which an
// idle worker may not run for a long time: let it go after this long
// without work; it is started again for the next series.
const WORKER_IDLE_MS = 2000;

// Start-up milestones, read by benchmarks/viewer.py (performance.getEntriesByType('mark')).
const mark = (name) => performance.mark(`filmless:${name}`);

// The first slice's bytes, fetched by early.js for its preview, go to the
// image loader as they are: the slice is fetched once. The loader asks
// metadata providers for a frame's "compressedFrameData" before going to
// the network (dicom-image-loader's frame registry); this one answers once
// for that one image, then lets the bytes go.
function offerEarlyFrame(absoluteRoot) {
  const early = window.filmlessEarly;
  const f = early?.frame;
  if (!f) return;
  early.frame = null;
  const imageId = `wadors:${absoluteRoot}/studies/${f.study}/series/${f.series}/instances/${f.sop}/frames/${f.frame}`;
  let pixels = f.pixels;
  const provider = (type, id) => {
    if (type !== 'compressedFrameData' || id !== imageId || !pixels) return undefined;
    const data = { pixelData: pixels, transferSyntaxUid: f.transferSyntax };
    pixels = null;
    metaData.removeProvider(provider);
    return data;
  };
  metaData.addProvider(provider, 10000);
}

// Wait (a little) for early.js's first slice, if it is on its way.
function earlyFrame() {
  const settled = window.filmlessEarly?.frameSettled;
  if (!settled) return Promise.resolve(false);
  return Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 3000, false))]);
}

// One viewer on this page: `config` defaults to the page's query string
// (rules.readConfig). Returns { probe, start }: start() fetches, builds the
// grid and toolbar and resolves when the first image is up (or an error is
// shown); probe is the read-only view tests and benchmarks use.
export function createViewer({ config = readConfig(window.location.search, window.location.origin) } = {}) {
  const savedMeasurements = createMeasurementStore(config);
  let measurementsLoaded = Promise.resolve();
  const state = {
    ready: false,
    error: null,
    notice: null,
    seriesList: [],
    stacks: new Map(),
    grid: null,
    firstImageAt: null,
    layoutBusy: 0,
    // The EMR's signed report versions (reports.js parseReports; null: no
    // answer, undefined: not asked yet) and the SOP Instance UIDs of the
    // study's DOC series.
    reports: undefined,
    docSops: new Map(),
    reportsLoaded: false,
    // The user's emergency accesses in force (emergency.js parseGrants) and
    // whether the EMR was asked (and answered or failed).
    emergency: [],
    emergencyLoaded: false,
  };

  // Test and benchmark hook: read-only views of what is on screen
  // (src/boot.js publishes it as window.filmlessViewer).
  const probe = {
    // True once the first image is on screen (and did not fail to decode).
    // True once the first image is on screen (and did not fail to decode),
    // and no layout change is still filling or painting its cells.
    get ready() {
      const grid = state.grid;
      return state.ready && !grid?.active?.failed && !state.layoutBusy && Boolean(grid?.painted(grid.active));
    },
    // Bytes of decoded images Cornerstone holds (benchmarks/viewer.py).
    get cacheBytes() {
      return cache.getCacheSize();
    },
    // Cells showing a stack that decoded.
    get filledCount() {
      return state.grid?.cells.filter((c) => c.stack && !c.failed).length ?? 0;
    },
    get error() {
      return state.error;
    },
    get notice() {
      return state.notice;
    },
    get renderer() {
      return state.renderer ?? null;
    },
    get firstImageAt() {
      return state.firstImageAt;
    },
    // The report entries beside the series (after the EMR answered or refused).
    get reportsLoaded() {
      return state.reportsLoaded;
    },
    sideEntries() {
      return sideEntries(state.seriesList, state.reports, state.docSops);
    },
    // The emergency-access banner's patients (after the EMR answered or refused).
    get emergencyLoaded() {
      return state.emergencyLoaded;
    },
    get emergency() {
      return state.emergency.map((g) => ({ ...g }));
    },
    get currentIndex() {
      const vp = state.grid?.viewport();
      return vp ? vp.getCurrentImageIdIndex() : -1;
    },
    get imageCount() {
      return state.grid?.active?.stack?.imageIds.length ?? 0;
    },
    get loadedCount() {
      const ids = state.grid?.active?.stack?.imageIds ?? [];
      return ids.filter((id) => cache.isLoaded(id)).length;
    },
    get seriesUid() {
      return state.grid?.active?.series?.uid ?? null;
    },
    get cellCount() {
      return state.grid?.cells.length ?? 0;
    },
    get failed() {
      return state.grid?.active?.failed ?? false;
    },
    voi() {
      const vp = state.grid?.viewport();
      return vp ? centerWidth(vp.getProperties().voiRange) : null;
    },
    canvas() {
      return state.grid?.viewport()?.canvas ?? null;
    },
    // The image's corners in canvas (device) pixels: for pixel comparisons.
    imageRect() {
      const vp = state.grid?.viewport();
      if (!vp) return null;
      const image = vp.getImageData();
      if (!image) return null;
      const [cols, rows] = image.dimensions;
      const scale = vp.canvas.width / vp.canvas.clientWidth;
      const toCanvas = (i, j) => {
        const world = image.imageData.indexToWorld([i, j, 0]);
        const [x, y] = vp.worldToCanvas(world);
        return [x * scale, y * scale];
      };
      // Pixel centres of the first and last pixel, so callers can map exactly.
      const first = toCanvas(0, 0);
      const last = toCanvas(cols - 1, rows - 1);
      if (state.renderer === 'cpu') {
        // Cornerstone's CPU path maps an index to its pixel's top-left corner.
        const hx = (last[0] - first[0]) / (cols - 1) / 2;
        const hy = (last[1] - first[1]) / (rows - 1) / 2;
        first[0] += hx;
        first[1] += hy;
        last[0] += hx;
        last[1] += hy;
      }
      return { first, last, cols, rows };
    },
    setIndex(i) {
      return state.grid?.viewport()?.setImageIdIndex(i);
    },
    // Server-side saving of measurements: enabled (logged in), saving, last PUT status.
    get measurementSync() {
      return {
        enabled: savedMeasurements.enabled,
        saved: savedMeasurements.savedCount,
        busy: savedMeasurements.busy,
        status: savedMeasurements.lastSaveStatus,
      };
    },
    measurements() {
      return annotation.state.getAllAnnotations().map((a) => ({
        tool: a.metadata.toolName,
        imageId: a.metadata.referencedImageId,
        stats: a.data.cachedStats,
      }));
    },
  };

  function fail(key, params = {}, retry = null, link = null) {
    state.error = key;
    showPageMessage(t(key, params), retry, link);
  }

  // Opened without ?study= (a bookmark, a typed address): say so and lead back to the EMR; nothing
  // else starts (no Cornerstone, no requests), so nothing can fail behind the message.
  function noStudy() {
    document.getElementById('toolbar').hidden = true;
    document.getElementById('workspace').hidden = true;
    fail('viewer.error.no_study', {}, null, { href: '/', label: t('viewer.back_to_emr') });
  }

  function errorKey(err) {
    if (err instanceof DicomwebError) {
      if (err.status === 401) return ['viewer.error.login', {}];
      if (err.status === 403) return ['viewer.error.forbidden', {}];
      if (err.status === 410 || err.code === 'expired') return ['viewer.error.expired', {}];
      if (err.status === 404) return ['viewer.error.missing_study', {}];
      if (err.status === 0) return ['viewer.error.network', {}];
      return ['viewer.error.server', { status: err.status }];
    }
    console.error(err);
    return ['viewer.error.server', { status: '?' }];
  }

  async function getStack(client, seriesUid) {
    if (!state.stacks.has(seriesUid)) {
      state.stacks.set(seriesUid, loadSeriesStack(client, config.study, seriesUid));
    }
    try {
      return await state.stacks.get(seriesUid);
    } catch (err) {
      state.stacks.delete(seriesUid);
      throw err;
    }
  }

  function studyContext(list) {
    return { study: list.series[0]?.raw ?? {} };
  }

  async function openSeries(client, grid, cell, series, ui) {
    let stack;
    try {
      stack = await getStack(client, series.uid);
      mark('metadata');
    } catch (err) {
      const [key, params] = errorKey(err);
      grid.showMessage(cell, t(key, params));
      return false;
    }
    stopCine(cell, ui);
    state.renderer = rendererFor(stack, state.renderer, config.render);
    const shown = await grid.showStack(cell, series, stack, state.context);
    if (shown) {
      measurementsLoaded.then(() => savedMeasurements.restore(cell.element, stack.imageIds));
      cell.prefetchRetries = 0;
      toolUtils.stackPrefetch.enable(cell.element);
      if (stack.multiframe && stack.imageIds.length > 1) startCine(cell, ui);
    }
    ui.thumbs?.setActive(grid.active?.series?.uid);
    return shown;
  }

  function retryPrefetchAfterFailure(evt) {
    const imageId = evt.detail?.imageId;
    for (const cell of state.grid?.cells ?? []) {
      const stack = cell.stack;
      if (!imageId || !stack?.imageIds.includes(imageId) || cell.prefetchRetryTimer) continue;
      const tries = cell.prefetchRetries ?? 0;
      if (tries >= PREFETCH_RETRY_MS.length) continue;
      cell.prefetchRetries = tries + 1;
      cell.prefetchRetryTimer = setTimeout(() => {
        cell.prefetchRetryTimer = null;
        // Failed loads leave the cache, so prefetching again asks only for them.
        if (cell.stack === stack) toolUtils.stackPrefetch.enable(cell.element);
      }, PREFETCH_RETRY_MS[tries]);
    }
  }

  function startCine(cell, ui) {
    const fps = cell.stack.cineRate || (cell.stack.frameTime ? 1000 / cell.stack.frameTime : 15);
    toolUtils.cine.playClip(cell.element, { framesPerSecond: Math.min(60, Math.max(1, fps)), loop: true });
    cell.cine = true;
    ui.toolbar?.setCinePlaying(true);
  }

  function stopCine(cell, ui) {
    if (cell?.cine) {
      toolUtils.cine.stopClip(cell.element);
      cell.cine = false;
    }
    ui.toolbar?.setCinePlaying(false);
  }

  async function thumbnailUrl(client, series) {
    const stack = state.stacks.has(series.uid) ? await state.stacks.get(series.uid) : null;
    let path;
    const st = encodeURIComponent(config.study);
    const se = encodeURIComponent(series.uid);
    if (stack?.imageIds.length) {
      const mid = stack.imageIds[Math.floor(stack.imageIds.length / 2)];
      path = mid.slice(mid.indexOf('/studies/')).replace(/\/frames\/\d+$/, '') + '/rendered';
    } else {
      const { body } = await client.getJson(`/studies/${st}/series/${se}/instances?limit=1`);
      const sop = tagValue(body[0], '00080018');
      if (!sop) return null;
      path = `/studies/${st}/series/${se}/instances/${encodeURIComponent(sop)}/rendered`;
    }
    const blob = await client.getBlob(path);
    return URL.createObjectURL(blob);
  }

  // The signed report's versions from the EMR (a session is needed: a share
  // link's visitor gets the report from the link's own page), and which DOC
  // series hold them; the side entries are rebuilt with the answer.
  async function loadReports() {
    if (config.token || !config.study) return null;
    try {
      const r = await fetch(`${REPORTS_ROOT}/${encodeURIComponent(config.study)}`, {
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
      });
      if (!r.ok) return null;
      return parseReports(await r.json());
    } catch {
      return null; // no EMR behind the viewer: the report is not linked
    }
  }

  // The user's emergency accesses in force, shown as every EMR page shows
  // them. Not for a share link's visitor (no session), nor in a frame: the
  // viewer is framed only by EMR pages (frame-ancestors 'self'), which show
  // the banner themselves; nor without a study (nothing of a patient shown).
  async function loadEmergency() {
    if (config.token || !config.study || window.self !== window.top) return [];
    try {
      const r = await fetch(GRANTS_ROOT, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (!r.ok || !(r.headers.get('Content-Type') || '').includes('json')) return [];
      return parseGrants(await r.json());
    } catch {
      return []; // no EMR behind the viewer (or it did not answer): no banner
    }
  }

  async function refreshEmergency() {
    state.emergency = await loadEmergency();
    state.emergencyLoaded = true;
    showEmergencyBanner(bannerModel(state.emergency, t));
  }

  async function loadDocSops(client, seriesList) {
    const st = encodeURIComponent(config.study);
    const out = new Map();
    const docs = seriesList.filter((s) => !s.isImage && s.modality === 'DOC');
    await Promise.all(
      docs.map(async (s) => {
        try {
          const { body } = await client.getJson(`/studies/${st}/series/${encodeURIComponent(s.uid)}/instances`);
          out.set(s.uid, body.map((item) => tagValue(item, '00080018')).filter(Boolean));
        } catch {
          // left out: the series stays a labelled entry of its own
        }
      }),
    );
    return out;
  }

  async function refreshReports(client, ui) {
    const reports = await loadReports();
    const docSops = reports ? await loadDocSops(client, state.seriesList) : new Map();
    state.reports = reports;
    state.docSops = docSops;
    state.reportsLoaded = true;
    ui.thumbs?.setExtras(sideEntries(state.seriesList, state.reports, state.docSops));
  }

  function seriesSignature(list) {
    return list.series.map((s) => `${s.uid}:${s.count}`).join('|');
  }


  async function boot() {
    mark('bundle');
    const client = createClient(config);
    const listPromise = loadSeriesList(client, config.study);
    listPromise.catch(() => {});
    state.renderer = initCornerstone({ authHeaders: client.authHeaders, render: config.render });
    mark('cornerstone');
    // The decoder workers exist once Cornerstone is up: only then can idle ones be let go.
    setInterval(() => getWebWorkerManager().terminateIdleWorkers('dicomImageLoader', WORKER_IDLE_MS), WORKER_IDLE_MS / 2);
    // Know the first series before the viewports exist: its rescale values
    // decide the rendering path (rendererFor).
    try {
      const early = await listPromise;
      const uid = config.series || early.defaultUid;
      if (uid) state.renderer = rendererFor(await getStack(client, uid), state.renderer, config.render);
    } catch {
      // reported below, where the series list is awaited again
    }
    const toolGroup = createToolGroup('filmless');
    const grid = new Grid(document.getElementById('grid'), toolGroup);
    state.grid = grid;
    grid.setLayout(1, 1);
    grid.activate(0);
    mark('grid');
    const ui = {};

    let list;
    try {
      list = await listPromise;
    } catch (err) {
      const [key, params] = errorKey(err);
      if (key === 'viewer.error.missing_study') {
        fail(key, {}, () => window.location.reload());
        pollForStudy(client, grid, ui, '');
      } else {
        fail(key, params);
      }
      return;
    }
    const images = list.series.filter((s) => s.isImage);
    if (!images.length) {
      fail(list.series.length ? 'viewer.error.no_images' : 'viewer.error.missing_study', {}, () =>
        window.location.reload(),
      );
      if (list.arriving) setArriving(list);
      pollForStudy(client, grid, ui, seriesSignature(list));
      return;
    }
    mark('series-list');
    state.seriesList = list.series;
    state.context = studyContext(list);
    const first = images.find((s) => s.uid === config.series) || images.find((s) => s.uid === list.defaultUid) || images[0];
    await earlyFrame();
    offerEarlyFrame(client.absoluteRoot);
    const shown = await openSeries(client, grid, grid.active, first, ui);
    if (shown) {
      // "ready" means painted: wait for Cornerstone's first render of it.
      await new Promise((resolve) => {
        grid.active.element.addEventListener(CsEvents.IMAGE_RENDERED, resolve, { once: true });
        grid.viewport()?.render();
        setTimeout(resolve, 2000);
      });
      mark('first-image');
      replacePreview(grid.active);
      state.ready = true;
      state.firstImageAt = performance.now();
    }
    setupChrome(client, grid, toolGroup, ui);
    savedMeasurements.listen();
    if (list.arriving) setArriving(list);
    pollForStudy(client, grid, ui, seriesSignature(list), list.arriving);
  }

  // The first stage's preview canvas (public/early.js) stays until Cornerstone
  // has painted the same slice, so the screen never goes blank in between.
  function replacePreview(cell) {
    const early = window.filmlessEarly;
    if (!early) return;
    const holder = early.preview;
    early.preview = 'replaced';
    if (!holder || typeof holder === 'string') return;
    const remove = () => holder.remove();
    cell.element.addEventListener(CsEvents.IMAGE_RENDERED, remove, { once: true });
    setTimeout(remove, 1000);
    renderCell(cell);
  }

  function renderCell(cell) {
    state.grid?.viewport(cell)?.render();
  }

  function setArriving(list) {
    const count = list.series.reduce((n, s) => n + s.count, 0);
    state.notice = 'viewer.notice.arriving';
    showNotice(t('viewer.notice.arriving', { count }));
  }

  // While a study is still arriving, re-read the series list and refresh what
  // changed; stop when it has been quiet and the server no longer says it is
  // arriving, or after ten minutes.
  function pollForStudy(client, grid, ui, signature, arriving = true) {
    const started = Date.now();
    let quiet = arriving ? 0 : 1;
    const tick = async () => {
      if (Date.now() - started > POLL_LIMIT_MS || quiet >= 2) return;
      let list;
      try {
        list = await loadSeriesList(client, config.study);
      } catch {
        setTimeout(tick, POLL_MS);
        return;
      }
      const sig = seriesSignature(list);
      if (sig !== signature) {
        signature = sig;
        quiet = 0;
          if (!state.ready) {
          window.location.reload();
          return;
        }
        setArriving(list);
        state.seriesList = list.series;
        for (const s of list.series) state.stacks.delete(s.uid);
        ui.rebuildThumbs?.();
        refreshReports(client, ui); // a report PDF may just have been stored in the study
        for (const cell of grid.cells) {
          const fresh = list.series.find((s) => s.uid === cell.series?.uid);
          if (fresh) {
            const index = grid.viewport(cell).getCurrentImageIdIndex();
            const stack = await getStack(client, fresh.uid);
            await grid.showStack(cell, fresh, stack, state.context);
            grid.viewport(cell).setImageIdIndex(Math.min(index, stack.imageIds.length - 1));
          }
        }
      } else if (!list.arriving) {
        quiet += 1;
        if (state.notice) {
          state.notice = null;
          showNotice('');
        }
      }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  }

  function setupChrome(client, grid, toolGroup, ui) {
    const vp = () => grid.viewport();
    const render = () => vp()?.render();
    const actions = {
      tool(key) {
        setPrimaryTool(toolGroup, key);
        ui.toolbar.setActiveTool(primaryToolKey());
      },
      rotate() {
        const v = vp();
        if (!v) return;
        const rotation = ((v.getViewPresentation().rotation ?? 0) + 90) % 360;
        v.setViewPresentation({ rotation });
        render();
      },
      flipH() {
        const v = vp();
        if (!v) return;
        v.setCamera({ flipHorizontal: !v.getCamera().flipHorizontal });
        render();
      },
      flipV() {
        const v = vp();
        if (!v) return;
        v.setCamera({ flipVertical: !v.getCamera().flipVertical });
        render();
      },
      invert() {
        const v = vp();
        if (!v) return;
        v.setProperties({ invert: !v.getProperties().invert });
        render();
      },
      reset() {
        const v = vp();
        if (!v) return;
        // Cornerstone's CPU path keeps rotation and flips across resetCamera.
        v.setViewPresentation({ rotation: 0 });
        v.setCamera({ flipHorizontal: false, flipVertical: false });
        v.resetCamera();
        v.resetProperties();
        render();
      },
      clear() {
        // Clearing deletes the study's saved measurements on the server too, with
        // no undo: nothing happens unless the reader confirms.
        const count = savedMeasurements.total;
        if (!count || !window.confirm(t('viewer.tool.clear_confirm', { count }))) return;
        annotation.state.removeAllAnnotations();
        grid.cells.forEach((c) => grid.viewport(c)?.render());
        savedMeasurements.clearAll();
      },
      cine() {
        const cell = grid.active;
        if (!cell?.stack) return;
        if (cell.cine) stopCine(cell, ui);
        else startCine(cell, ui);
      },
      preset(key) {
        const v = vp();
        if (!v) return;
        if (key === 'default') {
          const invert = v.getProperties().invert;
          v.resetProperties();
          v.setProperties({ invert });
        } else {
          const p = PRESETS.find((x) => x.key === key);
          if (p) v.setProperties({ voiRange: voiRange(p.center, p.width) });
        }
        render();
      },
      // Layout changes run one after the other: a second click while the
      // first is still filling its cells must not fill (or remove) cells
      // under it. `ready` is false until the last one is done and painted.
      layout(rows, cols) {
        state.layoutBusy += 1;
        layoutQueue = layoutQueue
          .then(() => fillLayout(rows, cols))
          .catch((err) => console.error(err))
          .finally(() => {
            state.layoutBusy -= 1;
          });
        return layoutQueue;
      },
    };
    let layoutQueue = Promise.resolve();
    async function fillLayout(rows, cols) {
      const empty = grid.setLayout(rows, cols);
      // Fill new cells with the next series, the way film would be hung.
      const images = state.seriesList.filter((s) => s.isImage);
      const used = new Set(grid.cells.map((c) => c.series?.uid).filter(Boolean));
      let pool = images.filter((s) => !used.has(s.uid));
      for (const cell of empty) {
        if (!pool.length) pool = images.slice();
        const s = pool.shift();
        if (s) await openSeries(client, grid, cell, s, ui);
      }
    }
    ui.toolbar = buildToolbar(document.getElementById('toolbar'), actions);
    ui.toolbar.setActiveTool(primaryToolKey());
    ui.rebuildThumbs = () => {
      ui.thumbs = buildThumbnails(
        document.getElementById('thumbnails'),
        state.seriesList,
        (s) => openSeries(client, grid, grid.active, s, ui),
        (s) => thumbnailUrl(client, s),
        sideEntries(state.seriesList, state.reports, state.docSops),
      );
      ui.thumbs.setActive(grid.active?.series?.uid);
    };
    ui.rebuildThumbs();
    refreshReports(client, ui);
    ui.toolbar.setCinePlaying(Boolean(grid.active?.cine));
    grid.onActivate = (cell) => {
      ui.thumbs?.setActive(cell?.series?.uid);
      ui.toolbar?.setCinePlaying(Boolean(cell?.cine));
    };
    document.addEventListener('keydown', (e) => onKey(e, grid, actions));
  }

  function onKey(e, grid, actions) {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.altKey || e.ctrlKey || e.metaKey) return;
    const v = grid.viewport();
    const count = grid.active?.stack?.imageIds.length ?? 0;
    if (!v || !count) return;
    const index = v.getCurrentImageIdIndex();
    const go = (i) => {
      e.preventDefault();
      v.setImageIdIndex(Math.max(0, Math.min(count - 1, i)));
    };
    switch (e.key) {
      case 'ArrowDown':
      case 'ArrowRight':
        return go(index + 1);
      case 'ArrowUp':
      case 'ArrowLeft':
        return go(index - 1);
      case 'PageDown':
        return go(index + 10);
      case 'PageUp':
        return go(index - 10);
      case 'Home':
        return go(0);
      case 'End':
        return go(count - 1);
      case 'i':
        return actions.invert();
      case 'r':
        return actions.reset();
      case ' ':
        e.preventDefault();
        return actions.cine();
      default:
        if (presetForKey(e.key)) return actions.preset(presetForKey(e.key).key);
        if (e.key === '0') return actions.preset('default');
    }
    return undefined;
  }

  async function start() {
    refreshEmergency(); // beside the images, the error or the empty page alike
    if (!config.study) {
      noStudy();
      return;
    }
    measurementsLoaded = savedMeasurements.load();
    eventTarget.addEventListener(CsEvents.IMAGE_LOAD_FAILED, retryPrefetchAfterFailure);
    try {
      await boot();
    } catch (err) {
      const [key, params] = errorKey(err);
      fail(key, params);
    }
  }

  return { probe, start };
}
