// Window presets (width / level in HU) radiologists expect on CT.
export const PRESETS = [
  { key: 'brain', width: 80, center: 40 },
  { key: 'lung', width: 1500, center: -600 },
  { key: 'bone', width: 1800, center: 400 },
  { key: 'abdomen', width: 400, center: 50 },
  { key: 'mediastinum', width: 350, center: 50 },
];

export function voiRange(center, width) {
  return { lower: center - width / 2, upper: center + width / 2 };
}

export function centerWidth(range) {
  if (!range) return null;
  return { center: (range.upper + range.lower) / 2, width: range.upper - range.lower };
}
