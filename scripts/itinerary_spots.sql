-- Points of interest for scripts/itinerary.py's non-LLM spots worker (loaded into SQLite at start).
CREATE TABLE spots (city TEXT, name TEXT, kind TEXT, opens TEXT, closes TEXT, closed_on TEXT);
INSERT INTO spots VALUES
  ('paris', 'Louvre', 'museum', '09:00', '18:00', 'tuesday'),
  ('paris', 'Musée d''Orsay', 'museum', '09:30', '18:00', 'monday'),
  ('paris', 'Eiffel Tower', 'landmark', '09:30', '23:00', ''),
  ('paris', 'Marché des Enfants Rouges', 'market', '08:30', '20:30', 'monday'),
  ('paris', 'Sainte-Chapelle', 'church', '09:00', '19:00', ''),
  ('lisbon', 'Jerónimos Monastery', 'monument', '09:30', '18:00', 'monday'),
  ('lisbon', 'Time Out Market', 'market', '10:00', '24:00', ''),
  ('lisbon', 'Belém Tower', 'landmark', '09:30', '18:00', 'monday'),
  ('lisbon', 'Gulbenkian Museum', 'museum', '10:00', '18:00', 'tuesday'),
  ('rome', 'Colosseum', 'landmark', '08:30', '19:00', ''),
  ('rome', 'Vatican Museums', 'museum', '08:00', '19:00', 'sunday'),
  ('rome', 'Campo de'' Fiori', 'market', '07:00', '14:00', 'sunday'),
  ('rome', 'Pantheon', 'church', '09:00', '19:00', '');
