#!/usr/bin/env node
// miniseq ships its TypeScript sources; tsx compiles them on the fly (no build step to forget).
import { register } from "tsx/esm/api"

register()
await import("../src/cli/main.ts")
