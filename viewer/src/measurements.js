// Measurements saved on the server, per reader and study.
// GET/PUT <root>/<StudyInstanceUID> (same origin, session cookie; the EMR
// serves it under /reading/measurements). Annotations are stored with the
// SOP Instance UID and frame they were drawn on, so they come back on the
// right slice whatever the image URLs look like next time. Share-link
// visitors (a token, no session) neither load nor save.
import { eventTarget, getEnabledElement } from '@cornerstonejs/core';
import { annotation, Enums as ToolEnums } from '@cornerstonejs/tools';

const SAVE_DELAY_MS = 700;
const INSTANCE = /\/instances\/([0-9.]+)\/frames\/(\d+)/;

function where(imageId) {
  const m = INSTANCE.exec(imageId || '');
  return m ? { sop: m[1], frame: Number(m[2]) } : null;
}

function serialise(a) {
  const at = where(a.metadata?.referencedImageId);
  if (!at) return null;
  const { referencedImageId, ...metadata } = a.metadata;
  return {
    uid: a.annotationUID,
    sop: at.sop,
    frame: at.frame,
    metadata: JSON.parse(JSON.stringify(metadata)),
    handles: JSON.parse(JSON.stringify({ points: a.data.handles.points, textBox: a.data.handles.textBox })),
    label: a.data.label ?? '',
  };
}

export function createMeasurementStore(config) {
  const root = (config.measurementsRoot || '/reading/measurements').replace(/\/+$/, '');
  const url = `${root}/${encodeURIComponent(config.study)}`;
  const state = {
    enabled: false, saved: [], pending: null, saving: null, restored: new Set(), lastSaveStatus: null, dropAll: false,
  };

  async function load() {
    if (config.token || !config.study) return;
    try {
      const r = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      if (!r.ok) return;
      const body = await r.json();
      state.saved = Array.isArray(body.measurements) ? body.measurements : [];
      state.enabled = true;
    } catch {
      // No measurement service (viewer used outside the EMR): measuring still works, unsaved.
    }
  }

  async function save() {
    state.pending = null;
    const list = annotation.state.getAllAnnotations().map(serialise).filter(Boolean);
    // The PUT replaces the study's list: keep the saved measurements never put on screen in this
    // session (a series not opened), which the reader cannot have deleted; clearing drops them too.
    const shown = new Set(list.map((m) => m.uid));
    if (!state.dropAll) {
      for (const m of state.saved) if (!shown.has(m.uid) && !state.restored.has(m.uid)) list.push(m);
    }
    state.dropAll = false;
    try {
      const r = await fetch(url, {
        method: 'PUT',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ measurements: list }),
      });
      state.lastSaveStatus = r.status;
      if (r.ok) state.saved = list;
    } catch {
      state.lastSaveStatus = 0;
    }
  }

  function schedule(evt) {
    if (!state.enabled) return;
    if (evt?.detail?.changeType === ToolEnums.ChangeTypes?.StatsUpdated) return;
    clearTimeout(state.pending);
    state.pending = setTimeout(() => {
      state.saving = save().finally(() => {
        state.saving = null;
      });
    }, SAVE_DELAY_MS);
  }

  // Put saved annotations back on the stack shown in this viewport element.
  function restore(element, imageIds) {
    if (!state.enabled || !state.saved.length) return;
    const enabled = getEnabledElement(element);
    if (!enabled) return;
    const byInstance = new Map();
    for (const id of imageIds) {
      const at = where(id);
      if (at) byInstance.set(`${at.sop}/${at.frame}`, id);
    }
    const existing = new Set(annotation.state.getAllAnnotations().map((a) => a.annotationUID));
    let added = 0;
    for (const m of state.saved) {
      const imageId = byInstance.get(`${m.sop}/${m.frame}`);
      if (!imageId || existing.has(m.uid) || state.restored.has(m.uid)) continue;
      state.restored.add(m.uid);
      annotation.state.addAnnotation(
        {
          annotationUID: m.uid,
          highlighted: false,
          invalidated: true,
          isLocked: false,
          isVisible: true,
          metadata: { ...m.metadata, referencedImageId: imageId },
          data: { handles: { ...m.handles, activeHandleIndex: null }, label: m.label, cachedStats: {} },
        },
        element,
      );
      added += 1;
    }
    if (added) enabled.viewport.render();
  }

  function listen() {
    const E = ToolEnums.Events;
    for (const name of [E.ANNOTATION_COMPLETED, E.ANNOTATION_MODIFIED, E.ANNOTATION_REMOVED]) {
      eventTarget.addEventListener(name, schedule);
    }
  }

  // Clearing: the next save deletes every saved measurement of the study, shown or not.
  function clearAll() {
    state.dropAll = true;
    schedule();
  }

  return {
    load,
    listen,
    restore,
    schedule,
    clearAll,
    get enabled() {
      return state.enabled;
    },
    get savedCount() {
      return state.saved.length;
    },
    // What clearing would delete: the measurements shown and every one saved for
    // the study (also on series not shown).
    get total() {
      const uids = new Set(state.saved.map((m) => m.uid));
      for (const a of annotation.state.getAllAnnotations()) uids.add(a.annotationUID);
      return uids.size;
    },
    get lastSaveStatus() {
      return state.lastSaveStatus;
    },
    get busy() {
      return Boolean(state.pending || state.saving);
    },
  };
}
