"""Trading: the one order gate, the exchanges behind it, and the book of positions."""
