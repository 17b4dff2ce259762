// Toolbar, series thumbnails and page-level messages. Plain DOM: the
// viewer is one screen and must start fast.
import { t } from './i18n.js';
import { PRESETS } from './rules.js';

function button(parent, label, onClick, extra = {}) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (extra.title) b.title = extra.title;
  if (extra.key) b.dataset.key = extra.key;
  if (extra.className) b.className = extra.className;
  b.addEventListener('click', onClick);
  parent.appendChild(b);
  return b;
}

function group(parent, name) {
  const g = document.createElement('div');
  g.className = 'tb-group';
  if (name) g.dataset.group = name;
  parent.appendChild(g);
  return g;
}

export function buildToolbar(root, actions) {
  root.textContent = '';
  const tools = group(root, 'tools');
  const toolButtons = {};
  for (const key of ['windowLevel', 'scroll', 'pan', 'zoom', 'length', 'angle', 'ellipse']) {
    toolButtons[key] = button(tools, t(`viewer.tool.${key}`), () => actions.tool(key), { key: `tool-${key}` });
  }
  const view = group(root, 'view');
  button(view, t('viewer.tool.rotate'), actions.rotate, { key: 'rotate' });
  button(view, t('viewer.tool.flipH'), actions.flipH, { key: 'flipH' });
  button(view, t('viewer.tool.flipV'), actions.flipV, { key: 'flipV' });
  button(view, t('viewer.tool.invert'), actions.invert, { key: 'invert' });
  button(view, t('viewer.tool.reset'), actions.reset, { key: 'reset' });
  button(view, t('viewer.tool.clear'), actions.clear, { key: 'clear' });
  const cine = button(view, t('viewer.tool.cine'), actions.cine, { key: 'cine' });

  const presets = group(root, 'presets');
  const select = document.createElement('select');
  select.title = t('viewer.preset');
  select.dataset.key = 'preset';
  const placeholder = new Option(t('viewer.preset'), '');
  placeholder.disabled = true;
  select.add(placeholder);
  select.add(new Option(t('viewer.preset.default'), 'default'));
  for (const p of PRESETS) select.add(new Option(`${t(`viewer.preset.${p.key}`)} (${p.width}/${p.center})`, p.key));
  select.value = '';
  select.addEventListener('change', () => {
    actions.preset(select.value);
    select.value = '';
  });
  presets.appendChild(select);

  const layouts = group(root, 'layout');
  for (const [rows, cols] of [[1, 1], [1, 2], [2, 2]]) {
    button(layouts, `${rows}×${cols}`, () => actions.layout(rows, cols), {
      key: `layout-${rows}x${cols}`,
      title: t('viewer.layout'),
    });
  }
  return {
    setActiveTool(key) {
      for (const [k, b] of Object.entries(toolButtons)) b.classList.toggle('on', k === key);
    },
    setCinePlaying(playing) {
      cine.textContent = t(playing ? 'viewer.tool.cineStop' : 'viewer.tool.cine');
      cine.classList.toggle('on', playing);
    },
  };
}

export function buildThumbnails(root, seriesList, onPick, loadThumb) {
  root.textContent = '';
  const title = document.createElement('div');
  title.className = 'thumbs-title';
  title.textContent = t('viewer.series');
  root.appendChild(title);
  const items = new Map();
  for (const s of seriesList) {
    const item = document.createElement('button');
    item.type = 'button';
    item.dataset.series = s.uid;
    const label = document.createElement('span');
    if (!s.isImage) {
      // Reports (encapsulated PDF), SR, PR ... have no pixels: a labelled
      // entry, never a thumbnail or a stack (it would only paint black).
      item.className = 'thumb nonimage';
      item.disabled = true;
      label.textContent = s.modality === 'DOC' ? t('viewer.series.document') : `${s.modality} ${s.description}`.trim();
      item.title = `${s.number ?? ''} ${s.description}`.trim();
      item.append(label);
      root.appendChild(item);
      continue;
    }
    item.className = 'thumb';
    const img = document.createElement('img');
    img.alt = '';
    label.textContent = `${s.number ?? ''} ${s.modality} ${s.description}`.trim();
    const count = document.createElement('small');
    count.textContent = t('viewer.series.images', { count: s.count });
    item.append(img, label, count);
    item.addEventListener('click', () => onPick(s));
    root.appendChild(item);
    items.set(s.uid, item);
    loadThumb(s).then(
      (url) => {
        if (url) img.src = url;
      },
      () => {},
    );
  }
  return {
    setActive(uid) {
      for (const [k, item] of items) item.classList.toggle('on', k === uid);
    },
  };
}

export function showPageMessage(text, onRetry) {
  const box = document.getElementById('message');
  box.textContent = '';
  if (!text) {
    box.hidden = true;
    return;
  }
  const p = document.createElement('p');
  p.textContent = text;
  box.appendChild(p);
  if (onRetry) button(box, t('viewer.retry'), onRetry, { key: 'retry' });
  box.hidden = false;
}

export function showNotice(text) {
  const box = document.getElementById('notice');
  box.textContent = text || '';
  box.hidden = !text;
}
