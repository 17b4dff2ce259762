// The tool group every viewport shares and the mouse/touch bindings:
// primary button = the chosen tool (window/level by default), middle = pan,
// right = zoom, wheel = stack scroll; two fingers zoom, three pan.
import {
  addTool,
  ToolGroupManager,
  Enums as ToolEnums,
  WindowLevelTool,
  PanTool,
  ZoomTool,
  StackScrollTool,
  LengthTool,
  AngleTool,
  EllipticalROITool,
} from '@cornerstonejs/tools';
import { t } from './i18n.js';
import { ellipseLines, lengthLines, angleLines } from './labels.js';

const { MouseBindings } = ToolEnums;
export const SCROLL_DRAG = 'ScrollDrag';
export const PAN_DRAG = 'PanDrag';
export const ZOOM_DRAG = 'ZoomDrag';

export const PRIMARY_TOOLS = {
  windowLevel: WindowLevelTool.toolName,
  pan: PAN_DRAG,
  zoom: ZOOM_DRAG,
  scroll: SCROLL_DRAG,
  length: LengthTool.toolName,
  angle: AngleTool.toolName,
  ellipse: EllipticalROITool.toolName,
};

export function createToolGroup(id) {
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool, EllipticalROITool]) {
    addTool(tool);
  }
  const group = ToolGroupManager.createToolGroup(id);
  group.addTool(WindowLevelTool.toolName);
  group.addTool(PanTool.toolName);
  group.addTool(ZoomTool.toolName);
  group.addTool(StackScrollTool.toolName);
  group.addToolInstance(SCROLL_DRAG, StackScrollTool.toolName);
  group.addToolInstance(PAN_DRAG, PanTool.toolName);
  group.addToolInstance(ZOOM_DRAG, ZoomTool.toolName);
  // Measurement text in Vietnamese (src/labels.js), not Cornerstone's English.
  group.addTool(LengthTool.toolName, { getTextLines: (data, id) => lengthLines(data.cachedStats[id], t) });
  group.addTool(AngleTool.toolName, { getTextLines: (data, id) => angleLines(data.cachedStats[id], t) });
  group.addTool(EllipticalROITool.toolName, { getTextLines: (data, id) => ellipseLines(data.cachedStats[id], t) });

  group.setToolActive(PanTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Auxiliary }, { numTouchPoints: 3 }],
  });
  group.setToolActive(ZoomTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  for (const name of [LengthTool.toolName, AngleTool.toolName, EllipticalROITool.toolName]) {
    group.setToolPassive(name);
  }
  setPrimaryTool(group, 'windowLevel');
  return group;
}

let currentPrimary = null;

export function setPrimaryTool(group, key) {
  const name = PRIMARY_TOOLS[key];
  if (!name) return;
  if (currentPrimary && currentPrimary !== name) {
    group.setToolPassive(currentPrimary);
  }
  group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  currentPrimary = name;
}

export function primaryToolKey() {
  return Object.keys(PRIMARY_TOOLS).find((k) => PRIMARY_TOOLS[k] === currentPrimary) || null;
}
