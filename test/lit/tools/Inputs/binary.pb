
tiny