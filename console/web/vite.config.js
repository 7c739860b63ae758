import { defineConfig } from 'vite';

// The console is served under /console/ by the API server, which embeds
// ../ui/dist (console/assets.go); JSX is compiled by esbuild for Preact.
export default defineConfig({
  base: '/console/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: { outDir: '../ui/dist', emptyOutDir: true, target: 'es2022' },
});
