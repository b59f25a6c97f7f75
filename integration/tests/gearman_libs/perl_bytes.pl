#!/usr/bin/perl
# Payloads, empty results, exceptions and failures through Troupe's Gearman port with
# Perl's Gearman::Client and Gearman::Worker (Debian's libgearman-client-perl), as a user
# moving from gearmand would use them: the worker on one node, the client on another.
#
#     perl perl_bytes.pl WORKER_HOST:PORT CLIENT_HOST:PORT
#
# Prints one line per case and, last, a JSON summary; exits 1 if any case differs.
use strict;
use warnings;
$| = 1;

use Gearman::Client;
use Gearman::Worker;
use Storable qw(nfreeze thaw);
use Time::HiRes qw(sleep time);

my ($worker_addr, $client_addr) = @ARGV;
die "usage: perl_bytes.pl WORKER_HOST:PORT CLIENT_HOST:PORT\n" unless $client_addr;

# The worker runs in a child process; it stops when this process is gone, and this
# process kills it (by its PID) when it ends.
my $parent = $$;
my $worker_pid = fork() // die "fork: $!";
if ($worker_pid == 0) {
    open(STDOUT, '>', '/dev/null');
    my $w = Gearman::Worker->new(job_servers => [$worker_addr]);
    # Each returns what Perl code commonly does; Gearman::Worker turns a `die` into
    # WORK_EXCEPTION carrying the Storable-frozen error, and `undef` into WORK_FAIL.
    $w->register_function(perl_echo  => sub { $_[0]->arg });
    $w->register_function(perl_empty => sub { '' });
    $w->register_function(perl_zero  => sub { '0' });
    $w->register_function(perl_die   => sub { die "bad input\n" });
    $w->register_function(perl_undef => sub { undef });
    $w->register_function(perl_slow  => sub { sleep 3; 'slow' });
    $w->work(stop_if => sub { getppid() != $parent }) while getppid() == $parent;
    exit 0;
}
END { kill 'KILL', $worker_pid if $worker_pid && $$ == $parent }

my $client = Gearman::Client->new(job_servers => [$client_addr], exceptions => 1);
sleep 1.5;    # the worker's functions reach the other node's board

my @bad;
my $cases = 0;
sub check {
    my ($label, $ok, $detail) = @_;
    $cases++;
    printf "%s: %s%s\n", $label, ($ok ? 'ok' : 'DIFFERENT'), (defined $detail ? " ($detail)" : '');
    push @bad, $label unless $ok;
}

# Runs one foreground task and says how it ended: (complete, result, failed, exception).
sub run_task {
    my ($func, $arg) = @_;
    my ($result, $failed, $exception);
    my $ts = $client->new_task_set;
    $ts->add_task($func => \$arg, {
        on_complete  => sub { $result = ${ $_[0] } },
        on_fail      => sub { $failed = 1 },
        on_exception => sub { $exception = $_[0] },
        timeout      => 60,
    });
    $ts->wait(timeout => 60);
    return ($result, $failed, $exception);
}

my %payloads = (
    'all 256 byte values'    => join('', map { chr } 0 .. 255),
    '1 MiB random'           => join('', map { chr(int(rand(256))) } 1 .. (1 << 20)),
    'JSON string'            => '"quoted"',
    'integer beyond 64 bits' => '18446744073709551617',
    '1.10'                   => '1.10',
    'duplicate keys'         => '{"a": 1, "a": 2}',
    'Storable blob'          => nfreeze({ list => [1, 2, 3], text => "caf\x{e9}" }),
);
for my $label (sort keys %payloads) {
    my $p = $payloads{$label};
    my ($r, $failed) = run_task(perl_echo => $p);
    my $ok = !$failed && defined $r && $r eq $p;
    check($label, $ok, length($p) . ' bytes -> ' . (defined $r ? length($r) : 'none'));
}

# Gearman::Worker sends WORK_COMPLETE without its data argument for '' and '0' (it tests
# the result for truth), so both reach the client as empty data. (Debian's gearmand 1.1.20
# drops a worker that does this and runs the job again on another.)
for my $f (qw(perl_empty perl_zero)) {
    my $want = '';
    my ($r, $failed) = run_task($f => 'x');
    check("$f result", !$failed && defined $r && $r eq $want, defined $r ? "'$r'" : 'none');
}

# A `die` reaches the client as WORK_EXCEPTION with the worker's Storable data, which
# the client thaws back into the error; `undef` is WORK_FAIL, and on_fail runs.
{
    my ($r, $failed, $exception) = run_task(perl_die => 'x');
    my $thawed = eval { ${ thaw($exception) } } if defined $exception;
    check('die is an exception the client thaws', defined $thawed && $thawed eq "bad input\n",
        defined $thawed ? "thawed '$thawed'" : 'no exception');
    check('an exception ends the task without a result', !defined $r ? 1 : 0);
}
{
    my ($r, $failed, $exception) = run_task(perl_undef => 'x');
    check('undef is WORK_FAIL', $failed && !defined $exception && !defined $r);
}

# The admin protocol through the library: `status` (its public call) lists the worker's
# functions from the client's node, and `show jobs` (sent by the same plumbing) lists a
# job the worker on the other node holds.
my $status = $client->get_job_server_status;
my ($server) = keys %$status;
my $listed = $server && exists $status->{$server}{perl_echo}
    && $status->{$server}{perl_echo}{capable} >= 1;
check('status lists the worker on the other node', $listed ? 1 : 0);
my $slow = $client->dispatch_background(perl_slow => \'x', { uniq => 'perl-slow-1' });
sleep 1;
my @jobs;
$client->_job_server_status_command("show jobs\n", sub { push @jobs, $_[1] });
my ($handle) = ($slow // '') =~ m{//(.+)$};
check('show jobs lists the held job', defined $handle && grep({ index($_, "$handle\t") == 0 } @jobs) ? 1 : 0,
    join(' | ', @jobs));

printf "{\"cases\": %d, \"different\": [%s]}\n", $cases, join(', ', map { "\"$_\"" } @bad);
exit(@bad ? 1 : 0);
