// Progressive enhancement only: every page works without this file.
// On narrow screens tables are shown as stacked cards (emr.css); each cell
// gets its column heading as a label so the values stay readable.
document.querySelectorAll("table.list").forEach((table) => {
  const heads = Array.from(table.querySelectorAll("thead th")).map((th) => th.textContent.trim());
  table.querySelectorAll("tbody tr").forEach((row) => {
    Array.from(row.children).forEach((cell, i) => {
      if (heads[i] && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", heads[i]);
    });
  });
});

// Forms that undo something (revoking a patient's share link) ask first; the
// question is in the form's data-confirm, from the message catalogue.
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});
