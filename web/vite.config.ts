import { defineConfig } from "vite";

// The agent serves dist/ under a strict CSP (default-src 'self'; no inline script or
// style), so nothing may be inlined: no data: URLs for small assets, no inline
// module-preload polyfill (every browser the dashboard targets has modulepreload).
export default defineConfig({
  build: {
    outDir: "dist",
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
  },
});
