"""The reaper: what it removes, what it must leave, alone and beside live traffic."""
