// Placeholder until the command layer lands.
export async function run(argv: string[]): Promise<number> {
	process.stderr.write(`docker-egress: not implemented yet: ${argv.join(' ')}\n`);
	return 1;
}
