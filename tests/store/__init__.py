"""The session store: its methods, files, owners index and sealing, in one and several processes."""
