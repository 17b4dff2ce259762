// Toolbar, series thumbnails and page-level messages. Plain DOM: the
// viewer is one screen and must start fast.
import { t } from './i18n.js';
import { PRESETS } from './rules.js';

// Toolbar icons (24×24, stroked with the text colour). Every button also
// carries its Vietnamese name: as a tooltip and accessible name on desktop,
// as a visible label in the touch menu.
const ICONS = {
  windowLevel: '<circle cx="12" cy="12" r="8.5"/><path d="M12 3.5a8.5 8.5 0 0 1 0 17z" fill="currentColor"/>',
  scroll: '<rect x="6" y="8" width="12" height="8" rx="1"/><path d="M12 2.5v3M9.5 4 12 1.8 14.5 4M12 18.5v3.5M9.5 20l2.5 2.2 2.5-2.2"/>',
  pan: '<path d="M12 3v18M3 12h18M12 3 9.5 5.5M12 3l2.5 2.5M12 21l-2.5-2.5M12 21l2.5-2.5M3 12l2.5-2.5M3 12l2.5 2.5M21 12l-2.5-2.5M21 12l-2.5 2.5"/>',
  zoom: '<circle cx="10.5" cy="10.5" r="6.5"/><path d="m15.5 15.5 5 5M10.5 7.5v6M7.5 10.5h6"/>',
  length: '<path d="M4.5 19.5 19.5 4.5M3 16.5 7.5 21M16.5 3 21 7.5M9 14l1.5 1.5M12 11l1.5 1.5"/>',
  angle: '<path d="M20 19H4L15 5"/><path d="M9.5 19a6 6 0 0 0-2-4.2"/>',
  ellipse: '<ellipse cx="12" cy="12" rx="9" ry="6"/><path d="M9 12h6" stroke-dasharray="2 2"/>',
  rotate: '<path d="M19.5 12a7.5 7.5 0 1 1-2.2-5.3"/><path d="M20 3.5v5h-5"/>',
  flipH: '<path d="M12 3v18" stroke-dasharray="2 2"/><path d="M9 6 3 18h6zM15 6l6 12h-6z"/>',
  flipV: '<path d="M3 12h18" stroke-dasharray="2 2"/><path d="M6 9 18 3v6zM6 15l12 6v-6z"/>',
  invert: '<rect x="4" y="4" width="16" height="16" rx="1"/><path d="M4 20 20 4v16z" fill="currentColor"/>',
  reset: '<path d="M4.5 12a7.5 7.5 0 1 0 2.2-5.3"/><path d="M4 3.5v5h5"/>',
  clear: '<path d="M4 7h16M9.5 7V4h5v3M6.5 7l1 13h9l1-13M10 11v5M14 11v5"/>',
  cine: '<path d="M8 5v14l11-7z" fill="currentColor"/>',
  cineStop: '<rect x="6.5" y="6.5" width="11" height="11" fill="currentColor"/>',
  'layout-1x1': '<rect x="4" y="4" width="16" height="16" rx="1"/>',
  'layout-1x2': '<rect x="4" y="4" width="16" height="16" rx="1"/><path d="M12 4v16"/>',
  'layout-2x2': '<rect x="4" y="4" width="16" height="16" rx="1"/><path d="M12 4v16M4 12h16"/>',
  menu: '<path d="M4 7h16M4 12h16M4 17h16"/>',
};

function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  svg.innerHTML = ICONS[name] || '';
  return svg;
}

function button(parent, label, onClick, extra = {}) {
  const b = document.createElement('button');
  b.type = 'button';
  if (extra.icon) {
    const text = document.createElement('span');
    text.className = 'label';
    text.textContent = label;
    b.append(icon(extra.icon), text);
    b.setAttribute('aria-label', label);
    b.title = extra.title || label;
  } else {
    b.textContent = label;
    if (extra.title) b.title = extra.title;
  }
  if (extra.key) b.dataset.key = extra.key;
  if (extra.className) b.className = extra.className;
  b.addEventListener('click', onClick);
  parent.appendChild(b);
  return b;
}

function group(parent, name, label) {
  const g = document.createElement('div');
  g.className = 'tb-group';
  g.setAttribute('role', 'group');
  if (label) g.setAttribute('aria-label', label);
  if (name) g.dataset.group = name;
  parent.appendChild(g);
  return g;
}

// The toolbar: one row of icon buttons on desktop screens (it fits 1280 px
// wide, and the ~800 px of the viewer embedded beside the report); on
// touch screens and narrow windows (style.css decides) the same buttons,
// labelled, in a menu opened from one button.
export function buildToolbar(root, actions) {
  root.textContent = '';
  const bar = document.createElement('div');
  bar.className = 'tb-bar';
  const current = document.createElement('span');
  current.className = 'tb-current';
  const items = document.createElement('div');
  items.className = 'tb-items';
  items.id = 'toolbar-items';
  const menuButton = button(bar, t('viewer.menu'), () => setOpen(!root.classList.contains('open')), {
    key: 'menu',
    icon: 'menu',
    className: 'tb-menu',
  });
  menuButton.setAttribute('aria-controls', items.id);
  menuButton.setAttribute('aria-expanded', 'false');
  bar.appendChild(current);
  root.append(bar, items);

  function setOpen(open) {
    root.classList.toggle('open', open);
    menuButton.setAttribute('aria-expanded', String(open));
  }
  // In the menu, a choice closes it (the image is what the reader wants to see).
  const inMenu = () => getComputedStyle(bar).display !== 'none';
  const then = (fn) => (...args) => {
    if (inMenu()) setOpen(false);
    return fn(...args);
  };

  const tools = group(items, 'tools', t('viewer.group.tools'));
  const toolButtons = {};
  for (const key of ['windowLevel', 'scroll', 'pan', 'zoom', 'length', 'angle', 'ellipse']) {
    toolButtons[key] = button(tools, t(`viewer.tool.${key}`), then(() => actions.tool(key)), {
      key: `tool-${key}`,
      icon: key,
    });
  }
  const view = group(items, 'view', t('viewer.group.view'));
  for (const key of ['rotate', 'flipH', 'flipV', 'invert', 'reset', 'clear']) {
    button(view, t(`viewer.tool.${key}`), then(actions[key]), { key, icon: key });
  }
  const cine = button(view, t('viewer.tool.cine'), then(actions.cine), { key: 'cine', icon: 'cine' });

  const presets = group(items, 'presets', t('viewer.preset'));
  const select = document.createElement('select');
  select.title = t('viewer.preset');
  select.setAttribute('aria-label', t('viewer.preset'));
  select.dataset.key = 'preset';
  const placeholder = new Option(t('viewer.preset'), '');
  placeholder.disabled = true;
  select.add(placeholder);
  select.add(new Option(t('viewer.preset.default'), 'default'));
  for (const p of PRESETS) select.add(new Option(`${t(`viewer.preset.${p.key}`)} (${p.width}/${p.center})`, p.key));
  select.value = '';
  select.addEventListener(
    'change',
    then(() => {
      actions.preset(select.value);
      select.value = '';
    }),
  );
  presets.appendChild(select);

  const layouts = group(items, 'layout', t('viewer.layout'));
  for (const [rows, cols] of [[1, 1], [1, 2], [2, 2]]) {
    const key = `layout-${rows}x${cols}`;
    button(layouts, t('viewer.layout.grid', { rows, cols }), then(() => actions.layout(rows, cols)), { key, icon: key });
  }
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') setOpen(false);
  });
  return {
    setActiveTool(key) {
      for (const [k, b] of Object.entries(toolButtons)) {
        b.classList.toggle('on', k === key);
        b.setAttribute('aria-pressed', String(k === key));
      }
      current.textContent = key ? t(`viewer.tool.${key}`) : '';
    },
    setCinePlaying(playing) {
      const label = t(playing ? 'viewer.tool.cineStop' : 'viewer.tool.cine');
      cine.replaceChildren(icon(playing ? 'cineStop' : 'cine'), Object.assign(document.createElement('span'), { className: 'label', textContent: label }));
      cine.title = label;
      cine.setAttribute('aria-label', label);
      cine.classList.toggle('on', playing);
    },
  };
}

// `extras`: the entries after the thumbnails (reports.js sideEntries): the
// signed report's links, labelled non-image series.
export function buildThumbnails(root, seriesList, onPick, loadThumb, extras = []) {
  root.textContent = '';
  const title = document.createElement('div');
  title.className = 'thumbs-title';
  title.textContent = t('viewer.series');
  root.appendChild(title);
  const items = new Map();
  for (const s of seriesList) {
    // Reports (encapsulated PDF), SR, PR ... have no pixels: never a
    // thumbnail or a stack (it would only paint black); see `extras`.
    if (!s.isImage) continue;
    const item = document.createElement('button');
    item.type = 'button';
    item.dataset.series = s.uid;
    const label = document.createElement('span');
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
  const side = document.createElement('div');
  side.className = 'thumbs-side';
  side.dataset.key = 'side-entries';
  root.appendChild(side);
  const setExtras = (entries) => side.replaceChildren(...entries.map(sideEntry));
  setExtras(extras);
  return {
    setActive(uid) {
      for (const [k, item] of items) item.classList.toggle('on', k === uid);
    },
    // Replace the entries after the thumbnails (the thumbnails stay as they are).
    setExtras,
  };
}

function entryText(part) {
  if (!part) return '';
  return part.key ? t(part.key, part.params || {}) : part.text || '';
}

// A report version is a link to the EMR's PDF, opened in a tab of its own
// (the images stay on screen); anything else without pixels is a labelled,
// disabled entry.
function sideEntry(entry) {
  const label = document.createElement('span');
  label.textContent = entryText(entry);
  let el;
  if (entry.kind === 'link') {
    el = document.createElement('a');
    el.href = entry.href;
    el.target = '_blank';
    el.rel = 'noopener';
    el.className = `thumb nonimage report ${entry.current ? 'current' : 'superseded'}`;
    el.dataset.key = entry.current ? 'report' : 'report-superseded';
    el.dataset.version = String(entry.version);
  } else {
    el = document.createElement('button');
    el.type = 'button';
    el.disabled = true;
    el.className = 'thumb nonimage';
    if (entry.series?.length) el.dataset.series = entry.series.join(' ');
  }
  el.title = entryText(entry.title);
  el.append(label);
  return el;
}

// `link`: { href, label } under the text (e.g. back to the EMR when there is nothing to show).
export function showPageMessage(text, onRetry, link = null) {
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
  if (link) {
    const a = document.createElement('a');
    a.href = link.href;
    a.textContent = link.label;
    a.dataset.key = 'back';
    box.appendChild(a);
  }
  box.hidden = false;
}

export function showNotice(text) {
  const box = document.getElementById('notice');
  box.textContent = text || '';
  box.hidden = !text;
}

// The banner of the user's emergency accesses in force (emergency.js
// bannerModel; null removes it), between the toolbar and the images, as the
// EMR's pages show it under their top bar.
export function showEmergencyBanner(model) {
  document.getElementById('break-glass-banner')?.remove();
  if (!model) return;
  const box = document.createElement('aside');
  box.id = 'break-glass-banner';
  box.className = 'break-glass-banner';
  box.setAttribute('role', 'status');
  const title = document.createElement('strong');
  title.textContent = model.title;
  const list = document.createElement('ul');
  for (const line of model.lines) {
    const li = document.createElement('li');
    let name;
    if (line.href) {
      name = document.createElement('a');
      name.href = line.href;
      name.target = '_blank';
      name.rel = 'noopener';
    } else {
      name = document.createElement('span');
    }
    name.textContent = line.name;
    li.append(name, ` ${line.detail}`);
    list.appendChild(li);
  }
  const logged = document.createElement('p');
  logged.textContent = model.logged;
  box.append(title, list, logged);
  document.getElementById('workspace').before(box);
}
