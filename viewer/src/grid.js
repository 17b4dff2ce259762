// The viewport grid (1×1, 1×2, 2×2): one Cornerstone stack viewport per
// cell, each with its text overlay, orientation markers and its own
// message box (a cell never stays a blank canvas).
import { RenderingEngine, Enums, eventTarget, getRenderingEngine } from '@cornerstonejs/core';
import { utilities as toolUtils } from '@cornerstonejs/tools';
import { t } from './i18n.js';
import { centerWidth } from './rules.js';
import { tagValue, personName } from './dicomweb.js';

const ENGINE_ID = 'filmless';
const { ViewportType, Events } = Enums;
const { getOrientationStringLPS, invertOrientationStringLPS } = toolUtils.orientation;

function el(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function formatDate(da) {
  if (!da || da.length !== 8) return da || '';
  return `${da.slice(6, 8)}/${da.slice(4, 6)}/${da.slice(0, 4)}`;
}

export class Grid {
  constructor(container, toolGroup) {
    this.container = container;
    this.toolGroup = toolGroup;
    this.engine = getRenderingEngine(ENGINE_ID) || new RenderingEngine(ENGINE_ID);
    this.cells = [];
    this.activeIndex = 0;
    this.onActivate = () => {};
    // Cells whose canvas was resized (and so cleared) and not painted since.
    this.unpainted = new Set();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(container);
    eventTarget.addEventListener(Events.IMAGE_LOAD_ERROR, (evt) => this.loadError(evt));
  }

  get active() {
    return this.cells[this.activeIndex];
  }

  viewport(cell = this.active) {
    return cell ? this.engine.getViewport(cell.viewportId) : null;
  }

  setLayout(rows, cols) {
    const wanted = rows * cols;
    this.container.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
    this.container.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
    while (this.cells.length > wanted) {
      const cell = this.cells.pop();
      this.toolGroup.removeViewports(this.engine.id, cell.viewportId);
      this.engine.disableElement(cell.viewportId);
      this.unpainted.delete(cell);
      cell.removed = true;
      cell.root.remove();
    }
    while (this.cells.length < wanted) {
      this.cells.push(this.createCell(this.cells.length));
    }
    if (this.activeIndex >= wanted) this.activate(0);
    this.resize();
    this.cells.forEach((cell) => this.updateOverlay(cell));
    return this.cells.filter((c) => !c.stack);
  }

  createCell(index) {
    const root = el('div', 'cell', this.container);
    const element = el('div', 'viewport', root);
    element.oncontextmenu = (e) => e.preventDefault();
    const overlay = {
      tl: el('div', 'ov ov-tl', root),
      tr: el('div', 'ov ov-tr', root),
      bl: el('div', 'ov ov-bl', root),
      br: el('div', 'ov ov-br', root),
      top: el('div', 'mk mk-top', root),
      bottom: el('div', 'mk mk-bottom', root),
      left: el('div', 'mk mk-left', root),
      right: el('div', 'mk mk-right', root),
    };
    const message = el('div', 'cell-message', root);
    message.hidden = true;
    const viewportId = `vp-${index}-${Date.now()}`;
    this.engine.enableElement({
      viewportId,
      type: ViewportType.STACK,
      element,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.toolGroup.addViewport(viewportId, this.engine.id);
    const cell = { index, root, element, overlay, message, viewportId, stack: null, series: null, failed: false };
    root.addEventListener('pointerdown', () => this.activate(this.cells.indexOf(cell)), true);
    const refresh = () => {
      this.updateOverlay(cell);
    };
    element.addEventListener(Events.IMAGE_RENDERED, () => {
      this.unpainted.delete(cell);
      refresh();
    });
    // Orientation markers follow the camera (rotation, flips), not the
    // slice: recomputed only when it changes (they read the layout).
    element.addEventListener(Events.CAMERA_MODIFIED, () => {
      cell.markersDirty = true;
    });
    return cell;
  }

  activate(index) {
    if (index < 0 || index >= this.cells.length) return;
    this.activeIndex = index;
    this.cells.forEach((c, i) => c.root.classList.toggle('active', i === index));
    this.onActivate(this.active);
  }

  // Resizing clears the canvases; Cornerstone paints them again on the next
  // animation frame. Until then a cell's canvas shows nothing (painted()).
  resize() {
    for (const cell of this.cells) {
      if (cell.stack && !cell.failed) this.unpainted.add(cell);
      cell.markersDirty = true;
    }
    this.engine.resize(true, false);
  }

  painted(cell = this.active) {
    return Boolean(cell) && !this.unpainted.has(cell);
  }

  showMessage(cell, text) {
    cell.message.textContent = text;
    cell.message.hidden = !text;
  }

  async showStack(cell, series, stack, context) {
    if (cell.removed) return false;
    cell.markersDirty = true;
    cell.series = series;
    cell.stack = stack;
    cell.context = context;
    cell.failed = false;
    this.showMessage(cell, '');
    const vp = this.viewport(cell);
    if (!stack.imageIds.length) {
      this.showMessage(cell, t('viewer.error.no_images'));
      return false;
    }
    try {
      await vp.setStack(stack.imageIds, 0);
    } catch (err) {
      this.markUndecodable(cell, err);
      return false;
    }
    vp.render();
    this.updateOverlay(cell);
    return true;
  }

  loadError(evt) {
    const detail = evt.detail;
    const imageId = detail?.imageId;
    if (!imageId) return;
    for (const cell of this.cells) {
      const vp = this.viewport(cell);
      if (cell.stack && vp && vp.getCurrentImageId?.() === imageId) {
        this.markUndecodable(cell, detail.error);
      }
    }
  }

  markUndecodable(cell, err) {
    cell.failed = true;
    this.unpainted.delete(cell);
    const syntax = String(err?.message || err || '').match(/\d+(?:\.\d+){4,}/)?.[0] || '?';
    this.showMessage(cell, t('viewer.error.undecodable', { syntax }));
    console.warn('filmless viewer: cannot display image', err);
  }

  updateOverlay(cell) {
    const { overlay } = cell;
    const vp = this.viewport(cell);
    const ctx = cell.context;
    if (!cell.stack || !vp || !ctx) {
      for (const node of Object.values(overlay)) node.textContent = '';
      return;
    }
    // Read the layout (markers) before writing text, so the browser does not
    // lay the page out twice per slice.
    if (cell.markersDirty) {
      cell.markersDirty = false;
      this.updateMarkers(cell, vp);
    }
    const study = ctx.study;
    const meta = cell.stack.firstMeta;
    setText(overlay.tl, [
      personName(study, '00100010') || personName(meta, '00100010'),
      tagValue(study, '00100020') || tagValue(meta, '00100020') || '',
      tagValue(meta, '00100030') ? t('viewer.overlay.birth', { date: formatDate(tagValue(meta, '00100030')) }) : '',
    ]);
    setText(overlay.tr, [
      ctx.institution || tagValue(meta, '00080080') || '',
      tagValue(study, '00081030') || tagValue(meta, '00081030') || '',
      formatDate(tagValue(study, '00080020') || tagValue(meta, '00080020')),
      cell.series.description
        ? t('viewer.overlay.series', { number: cell.series.number ?? '', description: cell.series.description })
        : t('viewer.overlay.series_number', { number: cell.series.number ?? '' }),
    ]);
    const index = vp.getCurrentImageIdIndex?.() ?? 0;
    const props = vp.getProperties?.() || {};
    const cw = centerWidth(props.voiRange);
    setText(overlay.bl, [
      t('viewer.overlay.image', { index: index + 1, count: cell.stack.imageIds.length }),
      cw ? t('viewer.overlay.window', { width: Math.round(cw.width), center: Math.round(cw.center) }) : '',
    ]);
    // getZoom() is NaN until the camera has been fitted to the first image.
    let zoom = '';
    try {
      const factor = vp.getZoom();
      if (Number.isFinite(factor) && factor > 0) zoom = t('viewer.overlay.zoom', { zoom: Math.round(factor * 100) });
    } catch {
      zoom = '';
    }
    setText(overlay.br, [zoom]);
  }

  updateMarkers(cell, vp) {
    const { overlay } = cell;
    let right = '';
    let down = '';
    try {
      const canvas = vp.canvas;
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      const c = vp.canvasToWorld([w / 2, h / 2]);
      const r = vp.canvasToWorld([w / 2 + 10, h / 2]);
      const d = vp.canvasToWorld([w / 2, h / 2 + 10]);
      const vec = (p) => [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
      right = getOrientationStringLPS(vec(r));
      down = getOrientationStringLPS(vec(d));
    } catch {
      // no image yet
    }
    const hasGeometry = tagValues6(cell.stack?.firstMeta);
    overlay.right.textContent = hasGeometry ? right : '';
    overlay.left.textContent = hasGeometry && right ? invertOrientationStringLPS(right) : '';
    overlay.bottom.textContent = hasGeometry ? down : '';
    overlay.top.textContent = hasGeometry && down ? invertOrientationStringLPS(down) : '';
  }

  reset() {
    for (const cell of this.cells) this.viewport(cell)?.render();
  }
}

function tagValues6(meta) {
  return (meta?.['00200037']?.Value?.length ?? 0) === 6;
}

function setText(node, lines) {
  const text = lines.filter(Boolean).join('\n');
  if (node.textContent !== text) node.textContent = text;
}
