// Entry point: evaluate the interactive viewer at once and start it.
// index.html preloads the bundle, and early.js (inline, already running)
// has the first requests in flight: evaluating the bundle (a long task) now
// fills the time the page would otherwise spend waiting for the series
// metadata, and the viewer takes the first slice from early.js when it
// arrives (early.frameSettled) instead of fetching it again.
import './style.css';

import('./main.js').then(({ createViewer }) => {
  const viewer = createViewer();
  window.filmlessViewer = viewer.probe;
  return viewer.start();
});
