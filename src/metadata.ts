import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The build (pkg/build.mjs) embeds the top-level `plugin-metadata` file here.
declare const __PLUGIN_METADATA__: string | undefined;

export type PluginMetadata = {
	SchemaVersion: string;
	Vendor: string;
	Version: string;
	ShortDescription: string;
	URL: string;
};

/** The metadata JSON, compact, as the Docker CLI reads it. */
export function pluginMetadata(): string {
	if (typeof __PLUGIN_METADATA__ === 'string') {
		return __PLUGIN_METADATA__;
	}

	// Unbundled (tests, `node build/src/main.js`): read the file from the source tree.
	const file = fileURLToPath(new URL('../../plugin-metadata', import.meta.url));
	return JSON.stringify(JSON.parse(readFileSync(file, 'utf8')));
}

export function parsedMetadata(): PluginMetadata {
	return JSON.parse(pluginMetadata()) as PluginMetadata;
}
