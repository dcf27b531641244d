use strict;
my @dirs = ('');
while (@dirs) {
  my $dir = shift @dirs;
  opendir(my $dh, $dir eq '' ? '.' : $dir) or die "cannot read $dir: $!\n";
  for my $name (readdir $dh) {
    next if $name eq '.' || $name eq '..' || $name eq '.git';
    my $path = $dir eq '' ? $name : "$dir/$name";
    my @st = lstat($path) or next;
    my ($type, $target) = ('', '');
    if (-l _) { $type = 'l'; $target = readlink($path); }
    elsif (-d _) { $type = 'd'; push @dirs, $path; }
    elsif (-f _) { $type = ($st[2] & 0111) ? 'x' : 'f'; }
    else { next; }
    print join("\0", $type, $st[7], $st[9], $path, $target), "\0";
  }
  closedir $dh;
}
